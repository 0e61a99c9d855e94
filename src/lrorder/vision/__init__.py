"""Li, Wei & Ma (2019) on CIFAR-10: data, WideResNet with pre-activation noise, trainer, recipes."""
