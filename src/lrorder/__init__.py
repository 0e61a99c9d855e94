"""lrorder: how the learning-rate schedule decides what a network learns, reproduced.

Recipes for Li, Wei & Ma (NeurIPS 2019) and Nakkiran (2020); see `lrorder list`.
"""

__version__ = "0.1.0"
