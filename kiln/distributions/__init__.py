"""``kiln.distributions``: ``torch.distributions``' families for VAEs, policies and probabilistic losses, traced.

```python
from kiln.distributions import Categorical, Normal, kl_divergence

posterior = Normal(mu, logvar.mul(0.5).exp())
z = posterior.rsample()                                   # gradients flow to mu and logvar
kl = kl_divergence(posterior, Normal(0.0, 1.0)).sum(-1)   # closed form
policy_loss = -(Categorical(logits=logits).log_prob(actions) * returns).mean()
```

Use them inside a traced function (a Module's forward, a loss given to ``kiln.compile_train_step``); see
``kiln/frontend/distributions.py`` for parameters, checks and draws.
"""

from kiln.frontend.distributions import Constraint, Distribution, InvalidParameterError
from kiln.frontend.distributions_constraint_registry import biject_to, transform_to
from kiln.frontend.distributions_continuous import Exponential, Laplace, Normal, Uniform
from kiln.frontend.distributions_continuous_bernoulli import ContinuousBernoulli
from kiln.frontend.distributions_counts import Binomial, Poisson
from kiln.frontend.distributions_dirichlet import Dirichlet
from kiln.frontend.distributions_discrete import Bernoulli, Categorical
from kiln.frontend.distributions_exp_family import ExponentialFamily
from kiln.frontend.distributions_extreme import GeneralizedPareto, Gumbel, Pareto, Weibull
from kiln.frontend import distributions_extreme_kl  # noqa: F401  (registers Gumbel's and Pareto's KL rules)
from kiln.frontend.distributions_gamma import Beta, Chi2, Gamma
from kiln.frontend.distributions_geometric import Geometric, NegativeBinomial
from kiln.frontend.distributions_heavy_tails import Cauchy, HalfCauchy, HalfNormal, StudentT
from kiln.frontend.distributions_independent import Independent
from kiln.frontend.distributions_kl import kl_divergence, register_kl
from kiln.frontend.distributions_lkj import LKJCholesky
from kiln.frontend.distributions_lowrank import LowRankMultivariateNormal
from kiln.frontend.distributions_mixture import MixtureSameFamily
from kiln.frontend.distributions_multinomial import Multinomial
from kiln.frontend.distributions_multivariate import MultivariateNormal
from kiln.frontend.distributions_one_hot import OneHotCategorical, OneHotCategoricalStraightThrough
from kiln.frontend.distributions_relaxed import RelaxedBernoulli, RelaxedOneHotCategorical
from kiln.frontend.distributions_transformed import LogNormal, TransformedDistribution
from kiln.frontend.distributions_transformed_more import FisherSnedecor, InverseGamma, Kumaraswamy, LogisticNormal
from kiln.frontend.distributions_von_mises import VonMises
from kiln.frontend.distributions_wishart import Wishart
from kiln.distributions import (  # torch's submodules, for `from torch.distributions.normal import Normal`
    bernoulli, beta, binomial, categorical, cauchy, chi2, constraint_registry, constraints, continuous_bernoulli,
    dirichlet, distribution, exp_family, exponential, fishersnedecor, gamma, generalized_pareto, geometric, gumbel,
    half_cauchy, half_normal, independent, inverse_gamma, kl, kumaraswamy, laplace, lkj_cholesky, log_normal,
    logistic_normal, lowrank_multivariate_normal,
    mixture_same_family, multinomial, multivariate_normal, negative_binomial, normal, one_hot_categorical, pareto,
    poisson, relaxed_bernoulli, relaxed_categorical, studentT, transformed_distribution, transforms, uniform, von_mises,
    weibull, wishart)
from kiln.distributions.transforms import (
    AbsTransform, AffineTransform, CatTransform, ComposeTransform, CorrCholeskyTransform, CumulativeDistributionTransform,
    ExpTransform, IndependentTransform, LowerCholeskyTransform, PositiveDefiniteTransform, PowerTransform,
    ReshapeTransform, SigmoidTransform, SoftmaxTransform, SoftplusTransform, StackTransform, StickBreakingTransform,
    TanhTransform, Transform, identity_transform)

__all__ = [
    "AbsTransform", "AffineTransform", "Bernoulli", "Beta", "Binomial", "Categorical", "CatTransform", "Cauchy",
    "Chi2", "ComposeTransform", "Constraint", "ContinuousBernoulli", "CorrCholeskyTransform",
    "CumulativeDistributionTransform", "Dirichlet", "Distribution", "Exponential", "ExponentialFamily",
    "ExpTransform", "FisherSnedecor", "Gamma", "GeneralizedPareto", "Geometric", "Gumbel", "HalfCauchy", "HalfNormal",
    "Independent", "IndependentTransform", "InvalidParameterError", "InverseGamma", "Kumaraswamy", "Laplace",
    "LKJCholesky", "LogisticNormal", "LogNormal", "LowerCholeskyTransform", "LowRankMultivariateNormal",
    "MixtureSameFamily", "Multinomial", "MultivariateNormal", "NegativeBinomial", "Normal", "OneHotCategorical",
    "OneHotCategoricalStraightThrough", "Pareto", "Poisson", "PositiveDefiniteTransform", "PowerTransform",
    "RelaxedBernoulli", "RelaxedOneHotCategorical", "ReshapeTransform", "SigmoidTransform", "SoftmaxTransform",
    "SoftplusTransform", "StackTransform", "StickBreakingTransform", "StudentT", "TanhTransform", "Transform",
    "TransformedDistribution", "Uniform", "VonMises", "Weibull", "Wishart",
    "bernoulli", "beta", "biject_to", "binomial", "categorical", "cauchy", "chi2", "constraint_registry",
    "constraints", "continuous_bernoulli", "dirichlet", "distribution", "exp_family", "exponential", "fishersnedecor",
    "gamma", "generalized_pareto", "geometric", "gumbel", "half_cauchy", "half_normal", "identity_transform",
    "independent", "inverse_gamma", "kl", "kl_divergence", "kumaraswamy", "laplace", "lkj_cholesky", "log_normal",
    "logistic_normal", "lowrank_multivariate_normal", "mixture_same_family", "multinomial", "multivariate_normal",
    "negative_binomial", "normal", "one_hot_categorical", "pareto", "poisson", "register_kl", "relaxed_bernoulli",
    "relaxed_categorical", "studentT", "transform_to", "transformed_distribution", "transforms", "uniform",
    "von_mises", "weibull", "wishart",
]
