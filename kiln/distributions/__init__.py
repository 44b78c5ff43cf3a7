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
from kiln.frontend.distributions_continuous import Exponential, Laplace, Normal, Uniform
from kiln.frontend.distributions_counts import Binomial, Poisson
from kiln.frontend.distributions_dirichlet import Dirichlet
from kiln.frontend.distributions_discrete import Bernoulli, Categorical
from kiln.frontend.distributions_gamma import Beta, Chi2, Gamma
from kiln.frontend.distributions_independent import Independent
from kiln.frontend.distributions_kl import kl_divergence, register_kl
from kiln.frontend.distributions_lowrank import LowRankMultivariateNormal
from kiln.frontend.distributions_mixture import MixtureSameFamily
from kiln.frontend.distributions_multivariate import MultivariateNormal
from kiln.frontend.distributions_one_hot import OneHotCategorical, OneHotCategoricalStraightThrough
from kiln.frontend.distributions_transformed import LogNormal, TransformedDistribution
from kiln.distributions import (categorical, constraints, independent, kl, mixture_same_family, normal,  # torch's submodules
                                one_hot_categorical, transformed_distribution, transforms)
from kiln.distributions.transforms import (
    AffineTransform, ComposeTransform, ExpTransform, PowerTransform, SigmoidTransform, SoftplusTransform, TanhTransform,
    Transform)

__all__ = [
    "AffineTransform", "Bernoulli", "Beta", "Binomial", "Categorical", "Chi2", "ComposeTransform", "Constraint", "Dirichlet",
    "Distribution", "ExpTransform", "Exponential", "Gamma", "Independent", "InvalidParameterError", "Laplace", "LogNormal",
    "LowRankMultivariateNormal",
    "MixtureSameFamily", "MultivariateNormal", "Normal", "OneHotCategorical", "OneHotCategoricalStraightThrough",
    "Poisson", "PowerTransform", "SigmoidTransform", "SoftplusTransform", "TanhTransform", "Transform", "TransformedDistribution",
    "Uniform", "categorical", "constraints", "independent", "kl", "kl_divergence", "mixture_same_family", "normal", "one_hot_categorical",
    "register_kl", "transformed_distribution", "transforms",
]
