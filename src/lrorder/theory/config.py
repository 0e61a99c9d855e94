"""Configs of the theory recipes: every knob of Sections 2-3 and Appendix F (None means
"Assumption 3.3's scaling"), typed, documented and checked before anything runs."""

from __future__ import annotations

import dataclasses
from typing import Literal

from lrorder.core.config import at_least, between, each, greater, param

LINEAR_Q_ERR = 0.25  # the best V-part error on Q of a function linear on the Q plane (Lemma 4.2)
BY_KAPPAS = "not a knob of theory-scaling"
MAX_TRAIN_ENTRIES = 5e8  # training inputs of one seed (float32: 2 GB); beyond it, say so
METHODS = ("ls", "s", "s_noise")


@dataclasses.dataclass(frozen=True)
class TheoryConfig:
    d: int = param(100, "input dimension of each part (x1, x2 in R^d); for conv the patch size",
                   check=at_least(4))
    kappa: float = param(0.3, "kappa of Assumption 3.3 (N/d = 1/kappa^2, p0 = kappa^2/2); used "
                         "where n_train, p0 are unset", check=between(1e-3, 1.0))
    n_train: int | None = param(None, "N, training examples (unset: d/kappa^2; conv: d k/kappa^2)",
                                check=at_least(1),
                                paper="d / kappa^2")
    r: float | None = param(None, "|zeta|, the Q pattern's gap (unset: d^-3/4; conv: (d k)^-3/4 / k)",
                              check=between(1e-6, 1.0),
                              paper="d^-3/4")
    p0: float | None = param(None, "P-only probability (unset: kappa^2/2)", check=between(0.0, 1.0),
                               paper="kappa^2 / 2")
    q0: float = param(0.4, "Q-only probability (Theta(1) in Assumption 3.3)", check=between(0.0, 1.0),
                       paper="Theta(1)")
    alpha_min: float = param(0.0, "Q's scale alpha ~ U[alpha_min, 1]; the paper's is U[0, 1]: a departure "
                             "(examples with alpha near 0 are never fitted by V and keep teaching W)",
                             check=between(0.0, 1.0), paper="0")
    lam: float | None = param(None, "weight decay lambda (unset: d^-5/4; conv: (d k)^-5/4)",
                                check=at_least(0.0),
                                paper="d^-5/4")
    structure: Literal["wv", "u", "conv"] = param("wv", "wv: W sees x1, V sees x2 (Section 2); u: one "
                                                  "unstructured U sees both; conv: filters shared by "
                                                  "patches of x (Appendix F.2)")
    patches: int = param(4, "conv: k patches of d coordinates at stride d/k; x2 in the last d/k "
                         "coordinates, x1 in the d (k - 2)/k + d before them", check=at_least(2))
    balanced_u: bool = param(True, "second layer with exactly half + and half - signs, else i.i.d. as "
                             "in Section 2: removes the mean of the bias-free net's random output "
                             "offset, and halves the seeds in which V never learns Q (docs/theory.md)")
    m_w: int = param(100, "W neurons (the width of U for structure u, the filters for conv)",
                     check=at_least(1))
    m_v: int = param(2000, "V neurons: Q is fitted only by the ~r/pi of them whose sign differs "
                     "on z and z +- zeta, so it needs many", check=at_least(1))
    tau0: float = param(0.4, "initialization std of U (Section 3)", check=greater(0.0))
    eta1: float = param(1.0, "large learning rate of L-S", check=greater(0.0))
    eta2: float = param(0.01, "small learning rate (L-S after the anneal, S, S + noise)", check=greater(0.0))
    tau_xi: float | None = param(None, "gradient-noise std (unset: the stationary value of "
                                 "Assumption 3.1 at tau0, eta1, lambda)", check=at_least(0.0),
                                 paper="eq. 3.3")
    eps1: float = param(0.01, "L-S anneals when the train loss < eps1 + q log 2", check=greater(0.0))
    eps2: float = param(1e-3, "every method stops at train loss < eps2 (absolute, not the paper's "
                        "eps1/q, which the runs may never reach)", check=greater(0.0))
    anneal_at: int = param(1500, "anneal at this iteration if the loss rule has not fired",
                           check=at_least(0))
    sigma: float = param(0.2, "S + noise: std of the pre-activation noise before its anneal "
                         "(Appendix F.1)", check=at_least(0.0))
    per_example_noise: bool = param(False, "S + noise: fresh noise per example (default: one "
                                    "value per neuron shared by all examples)")
    steps: int = param(15000, "iterations (a cap: runs stop earlier at eps2)", check=at_least(1))
    n_test: int = param(10000, "fresh test examples per seed", check=at_least(1))
    probe_every: int = param(100, "iterations between probes", check=at_least(1))
    learned_err: float = param(0.1, "a part 'has learned' its pattern once its error on its "
                               "examples is below this", check=between(0.0, 0.5))
    learned_probes: int = param(3, "... and stays below it for this many consecutive probes (or to the "
                                "end of the run): under the large LR single probes of the V-part flip",
                                check=at_least(1))
    methods: tuple[str, ...] = param(METHODS, "methods to run, of ls, s, s_noise")

    def problems(self) -> list[str]:
        unknown = [m for m in self.methods if m not in METHODS]
        problems = [f"unknown methods {unknown}: choose from {', '.join(METHODS)}"] if unknown else []
        if not self.methods or len(set(self.methods)) != len(self.methods):
            problems.append(f"methods must be distinct and not empty (got {','.join(self.methods)})")
        if self.resolved("p0") + self.q0 > 1:
            problems.append(f"p0 + q0 must be <= 1 (got {self.resolved('p0')} + {self.q0})")
        if self.tau_xi is None and not 0 < self.eta1 * self.resolved("lam") < 1:
            problems.append("eta1 * lam must be in (0, 1) for the stationary noise of eq. 3.3 "
                            f"(got {self.eta1 * self.resolved('lam'):g}): lower eta1 or lam, or set tau_xi")
        if self.structure == "conv" and (self.d % self.patches or self.d // self.patches < 2):
            problems.append(f"conv needs d divisible by patches with d/patches >= 2 (got d={self.d}, "
                            f"patches={self.patches})")
        if self.resolved("n_train") * self.d > MAX_TRAIN_ENTRIES:  # d: x1's size up to a factor 2 (conv)
            problems.append(f"n_train * d = {self.resolved('n_train') * self.d:g} is too large "
                            f"(> {MAX_TRAIN_ENTRIES:g}): raise kappa or set n_train")
        return problems

    def resolved(self, name: str) -> float:
        """A knob's value, with Assumption 3.3's scaling where it is unset (for conv, Theorem F.2's:
        d replaced by d k and r by r / k)."""
        value = getattr(self, name)
        if value is not None:
            return value
        k = self.patches if self.structure == "conv" else 1
        default = paper_defaults(self.d * k, self.kappa)[name]
        return default / k if name == "r" else default

    def distribution(self):
        """The data distribution of Section 2 (a `theory.data.Distribution`)."""
        from lrorder.theory import data

        knobs = {"r": self.resolved("r"), "p0": self.resolved("p0"), "q0": self.q0,
                 "alpha_min": self.alpha_min}
        if self.structure == "conv":  # x = (x1, x2) fills the patches: x2 the last stride, x1 the rest
            stride = self.d // self.patches
            return data.Distribution(d=self.d + (self.patches - 2) * stride, q_dim=stride, **knobs)
        return data.Distribution(d=self.d, **knobs)

    def noise_std(self) -> float:
        if self.tau_xi is not None:
            return self.tau_xi
        from lrorder.theory.optim import stationary_tau_xi

        return stationary_tau_xi(self.tau0, self.eta1, self.resolved("lam"))


def paper_defaults(d: int, kappa: float) -> dict[str, float]:
    """Assumption 3.3: N/d = 1/kappa^2, r = d^-3/4, p0 = kappa^2/2, lambda = d^-5/4."""
    return {"n_train": round(d / kappa**2), "r": d**-0.75, "p0": kappa**2 / 2, "lam": d**-1.25}


@dataclasses.dataclass(frozen=True)
class ScalingConfig(TheoryConfig):
    """theory-order's knobs, with kappa, N and p0 set by each value of `kappas` (Assumption 3.3)."""

    kappa: float = param(TheoryConfig.kappa, f"{BY_KAPPAS}: set kappas instead")
    n_train: int | None = param(None, f"{BY_KAPPAS}: N = d/kappa^2 at each of kappas")
    p0: float | None = param(None, f"{BY_KAPPAS}: p0 = kappa^2/2 at each of kappas")
    kappas: tuple[float, ...] = param((0.2, 0.3, 0.45), "values of kappa: each sets N = d/kappa^2 and "
                                      "p0 = kappa^2/2 (Assumption 3.3)", check=each(between(1e-3, 1.0)))
    methods: tuple[str, ...] = param(("ls", "s"), "methods to run, of ls, s, s_noise")

    def problems(self) -> list[str]:
        """No knob that `kappas` sets may be set; the base config's checks at every kappa."""
        fixed = [f"{name}={getattr(self, name)}" for name in ("kappa", "n_train", "p0")
                 if getattr(self, name) != getattr(ScalingConfig, name)]
        if fixed:
            return [f"theory-scaling does not take {', '.join(fixed)}: each of kappas sets kappa, "
                    "n_train and p0 (set kappas=...)"]
        found = [p for config in self.at_kappas() for p in TheoryConfig.problems(config)]
        return list(dict.fromkeys(found))

    def at_kappas(self) -> list[TheoryConfig]:
        """The theory-order config of each kappa, in the order of `kappas`."""
        return [TheoryConfig(**{**{f.name: getattr(self, f.name) for f in dataclasses.fields(TheoryConfig)},
                                "kappa": kappa}) for kappa in self.kappas]
