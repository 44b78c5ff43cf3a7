"""Neural spline flows: bayesiains/nflows' rational-quadratic spline (``transforms/splines/rational_quadratic.py``),
``PiecewiseRationalQuadraticCouplingTransform`` (``transforms/coupling.py``), ``ResidualNet`` (``nn/nets/resnet.py``),
``RandomPermutation``, ``CompositeTransform``, ``StandardNormal`` and ``Flow`` as written (their argument checks and
docstrings shortened), for ``torch`` being torch or kiln: the program of ``test_porting_probes_nsf.py``, whose docstring
says what it covers."""

from __future__ import annotations

import numpy as np

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


class InputOutsideDomain(Exception):
    """nflows' ``transforms.base.InputOutsideDomain``."""


def torchutils(torch):
    """``nflows.utils.torchutils``'s ``searchsorted`` (the bin index by counting the knots at or below each input, the
    last knot nudged up by ``eps`` in place), ``sum_except_batch`` and ``create_alternating_binary_mask``."""

    def searchsorted(bin_locations, inputs, eps=1e-6):
        bin_locations[..., -1] += eps
        return torch.sum(inputs[..., None] >= bin_locations, dim=-1) - 1

    def sum_except_batch(x, num_batch_dims=1):
        reduce_dims = list(range(num_batch_dims, x.ndimension()))
        return torch.sum(x, dim=reduce_dims)

    def create_alternating_binary_mask(features, even=True):
        mask = torch.zeros(features).byte()
        start = 0 if even else 1
        mask[start::2] += 1
        return mask

    return searchsorted, sum_except_batch, create_alternating_binary_mask


def splines(torch, F, searchsorted=None):
    """``(unconstrained_rational_quadratic_spline, rational_quadratic_spline)`` of rational_quadratic.py;
    ``searchsorted`` is torchutils' unless given (``torch.searchsorted`` in the test that swaps it)."""
    searchsorted = searchsorted or torchutils(torch)[0]

    def unconstrained_rational_quadratic_spline(
        inputs,
        unnormalized_widths,
        unnormalized_heights,
        unnormalized_derivatives,
        inverse=False,
        tails="linear",
        tail_bound=1.0,
        min_bin_width=DEFAULT_MIN_BIN_WIDTH,
        min_bin_height=DEFAULT_MIN_BIN_HEIGHT,
        min_derivative=DEFAULT_MIN_DERIVATIVE,
        enable_identity_init=False,
    ):
        inside_interval_mask = (inputs >= -tail_bound) & (inputs <= tail_bound)
        outside_interval_mask = ~inside_interval_mask

        outputs = torch.zeros_like(inputs)
        logabsdet = torch.zeros_like(inputs)

        if tails == "linear":
            unnormalized_derivatives = F.pad(unnormalized_derivatives, pad=(1, 1))
            constant = np.log(np.exp(1 - min_derivative) - 1)
            unnormalized_derivatives[..., 0] = constant
            unnormalized_derivatives[..., -1] = constant

            outputs[outside_interval_mask] = inputs[outside_interval_mask]
            logabsdet[outside_interval_mask] = 0
        else:
            raise RuntimeError("{} tails are not implemented.".format(tails))

        if torch.any(inside_interval_mask):
            (
                outputs[inside_interval_mask],
                logabsdet[inside_interval_mask],
            ) = rational_quadratic_spline(
                inputs=inputs[inside_interval_mask],
                unnormalized_widths=unnormalized_widths[inside_interval_mask, :],
                unnormalized_heights=unnormalized_heights[inside_interval_mask, :],
                unnormalized_derivatives=unnormalized_derivatives[inside_interval_mask, :],
                inverse=inverse,
                left=-tail_bound,
                right=tail_bound,
                bottom=-tail_bound,
                top=tail_bound,
                min_bin_width=min_bin_width,
                min_bin_height=min_bin_height,
                min_derivative=min_derivative,
                enable_identity_init=enable_identity_init,
            )

        return outputs, logabsdet

    def rational_quadratic_spline(
        inputs,
        unnormalized_widths,
        unnormalized_heights,
        unnormalized_derivatives,
        inverse=False,
        left=0.0,
        right=1.0,
        bottom=0.0,
        top=1.0,
        min_bin_width=DEFAULT_MIN_BIN_WIDTH,
        min_bin_height=DEFAULT_MIN_BIN_HEIGHT,
        min_derivative=DEFAULT_MIN_DERIVATIVE,
        enable_identity_init=False,
    ):
        if torch.min(inputs) < left or torch.max(inputs) > right:
            raise InputOutsideDomain()

        num_bins = unnormalized_widths.shape[-1]

        if min_bin_width * num_bins > 1.0:
            raise ValueError("Minimal bin width too large for the number of bins")
        if min_bin_height * num_bins > 1.0:
            raise ValueError("Minimal bin height too large for the number of bins")

        widths = F.softmax(unnormalized_widths, dim=-1)
        widths = min_bin_width + (1 - min_bin_width * num_bins) * widths
        cumwidths = torch.cumsum(widths, dim=-1)
        cumwidths = F.pad(cumwidths, pad=(1, 0), mode="constant", value=0.0)
        cumwidths = (right - left) * cumwidths + left
        cumwidths[..., 0] = left
        cumwidths[..., -1] = right
        widths = cumwidths[..., 1:] - cumwidths[..., :-1]

        if enable_identity_init:  # flow is the identity if initialized with parameters equal to zero
            beta = np.log(2) / (1 - min_derivative)
        else:  # backward compatibility
            beta = 1
        derivatives = min_derivative + F.softplus(unnormalized_derivatives, beta=beta)

        heights = F.softmax(unnormalized_heights, dim=-1)
        heights = min_bin_height + (1 - min_bin_height * num_bins) * heights
        cumheights = torch.cumsum(heights, dim=-1)
        cumheights = F.pad(cumheights, pad=(1, 0), mode="constant", value=0.0)
        cumheights = (top - bottom) * cumheights + bottom
        cumheights[..., 0] = bottom
        cumheights[..., -1] = top
        heights = cumheights[..., 1:] - cumheights[..., :-1]

        if inverse:
            bin_idx = searchsorted(cumheights, inputs)[..., None]
        else:
            bin_idx = searchsorted(cumwidths, inputs)[..., None]

        input_cumwidths = cumwidths.gather(-1, bin_idx)[..., 0]
        input_bin_widths = widths.gather(-1, bin_idx)[..., 0]

        input_cumheights = cumheights.gather(-1, bin_idx)[..., 0]
        delta = heights / widths
        input_delta = delta.gather(-1, bin_idx)[..., 0]

        input_derivatives = derivatives.gather(-1, bin_idx)[..., 0]
        input_derivatives_plus_one = derivatives[..., 1:].gather(-1, bin_idx)[..., 0]

        input_heights = heights.gather(-1, bin_idx)[..., 0]

        if inverse:
            a = (inputs - input_cumheights) * (
                input_derivatives + input_derivatives_plus_one - 2 * input_delta
            ) + input_heights * (input_delta - input_derivatives)
            b = input_heights * input_derivatives - (inputs - input_cumheights) * (
                input_derivatives + input_derivatives_plus_one - 2 * input_delta
            )
            c = -input_delta * (inputs - input_cumheights)

            discriminant = b.pow(2) - 4 * a * c
            assert (discriminant >= 0).all()

            root = (2 * c) / (-b - torch.sqrt(discriminant))
            # root = (- b + torch.sqrt(discriminant)) / (2 * a)
            outputs = root * input_bin_widths + input_cumwidths

            theta_one_minus_theta = root * (1 - root)
            denominator = input_delta + (
                (input_derivatives + input_derivatives_plus_one - 2 * input_delta)
                * theta_one_minus_theta
            )
            derivative_numerator = input_delta.pow(2) * (
                input_derivatives_plus_one * root.pow(2)
                + 2 * input_delta * theta_one_minus_theta
                + input_derivatives * (1 - root).pow(2)
            )
            logabsdet = torch.log(derivative_numerator) - 2 * torch.log(denominator)

            return outputs, -logabsdet
        else:
            theta = (inputs - input_cumwidths) / input_bin_widths
            theta_one_minus_theta = theta * (1 - theta)

            numerator = input_heights * (
                input_delta * theta.pow(2) + input_derivatives * theta_one_minus_theta
            )
            denominator = input_delta + (
                (input_derivatives + input_derivatives_plus_one - 2 * input_delta)
                * theta_one_minus_theta
            )
            outputs = input_cumheights + numerator / denominator

            derivative_numerator = input_delta.pow(2) * (
                input_derivatives_plus_one * theta.pow(2)
                + 2 * input_delta * theta_one_minus_theta
                + input_derivatives * (1 - theta).pow(2)
            )
            logabsdet = torch.log(derivative_numerator) - 2 * torch.log(denominator)

            return outputs, logabsdet

    return unconstrained_rational_quadratic_spline, rational_quadratic_spline


def nflows(torch, nn, F, searchsorted=None):
    """The classes of nflows a spline flow is built from, as a namespace dict: ``ResidualNet``, ``RandomPermutation``,
    ``PiecewiseRationalQuadraticCouplingTransform``, ``CompositeTransform``, ``StandardNormal``, ``Flow`` and
    ``create_alternating_binary_mask``."""
    init = nn.init
    _, sum_except_batch, create_alternating_binary_mask = torchutils(torch)
    unconstrained_rational_quadratic_spline, rational_quadratic_spline = splines(torch, F, searchsorted)

    class ResidualBlock(nn.Module):
        """A general-purpose residual block. Works only with 1-dim inputs."""

        def __init__(self, features, context_features, activation=F.relu, dropout_probability=0.0,
                     use_batch_norm=False, zero_initialization=True):
            super().__init__()
            self.activation = activation

            self.use_batch_norm = use_batch_norm
            if use_batch_norm:
                self.batch_norm_layers = nn.ModuleList(
                    [nn.BatchNorm1d(features, eps=1e-3) for _ in range(2)]
                )
            if context_features is not None:
                self.context_layer = nn.Linear(context_features, features)
            self.linear_layers = nn.ModuleList(
                [nn.Linear(features, features) for _ in range(2)]
            )
            self.dropout = nn.Dropout(p=dropout_probability)
            if zero_initialization:
                init.uniform_(self.linear_layers[-1].weight, -1e-3, 1e-3)
                init.uniform_(self.linear_layers[-1].bias, -1e-3, 1e-3)

        def forward(self, inputs, context=None):
            temps = inputs
            if self.use_batch_norm:
                temps = self.batch_norm_layers[0](temps)
            temps = self.activation(temps)
            temps = self.linear_layers[0](temps)
            if self.use_batch_norm:
                temps = self.batch_norm_layers[1](temps)
            temps = self.activation(temps)
            temps = self.dropout(temps)
            temps = self.linear_layers[1](temps)
            if context is not None:
                temps = F.glu(torch.cat((temps, self.context_layer(context)), dim=1), dim=1)
            return inputs + temps

    class ResidualNet(nn.Module):
        """A general-purpose residual network. Works only with 1-dim inputs."""

        def __init__(self, in_features, out_features, hidden_features, context_features=None, num_blocks=2,
                     activation=F.relu, dropout_probability=0.0, use_batch_norm=False):
            super().__init__()
            self.hidden_features = hidden_features
            self.context_features = context_features
            if context_features is not None:
                self.initial_layer = nn.Linear(in_features + context_features, hidden_features)
            else:
                self.initial_layer = nn.Linear(in_features, hidden_features)
            self.blocks = nn.ModuleList(
                [
                    ResidualBlock(
                        features=hidden_features,
                        context_features=context_features,
                        activation=activation,
                        dropout_probability=dropout_probability,
                        use_batch_norm=use_batch_norm,
                    )
                    for _ in range(num_blocks)
                ]
            )
            self.final_layer = nn.Linear(hidden_features, out_features)

        def forward(self, inputs, context=None):
            if context is None:
                temps = self.initial_layer(inputs)
            else:
                temps = self.initial_layer(torch.cat((inputs, context), dim=1))
            for block in self.blocks:
                temps = block(temps, context=context)
            outputs = self.final_layer(temps)
            return outputs

    class Transform(nn.Module):
        """Base class for all transform objects."""

        def forward(self, inputs, context=None):
            raise NotImplementedError()

        def inverse(self, inputs, context=None):
            raise NotImplementedError()

    class CompositeTransform(Transform):
        """Composes several transforms into one, in the order they are given."""

        def __init__(self, transforms):
            super().__init__()
            self._transforms = nn.ModuleList(transforms)

        @staticmethod
        def _cascade(inputs, funcs, context):
            batch_size = inputs.shape[0]
            outputs = inputs
            total_logabsdet = inputs.new_zeros(batch_size)
            for func in funcs:
                outputs, logabsdet = func(outputs, context)
                total_logabsdet += logabsdet
            return outputs, total_logabsdet

        def forward(self, inputs, context=None):
            funcs = self._transforms
            return self._cascade(inputs, funcs, context)

        def inverse(self, inputs, context=None):
            funcs = (transform.inverse for transform in self._transforms[::-1])
            return self._cascade(inputs, funcs, context)

    class Permutation(Transform):
        """Permutes inputs on a given dimension using a given permutation."""

        def __init__(self, permutation, dim=1):
            if permutation.ndimension() != 1:
                raise ValueError("Permutation must be a 1D tensor.")
            super().__init__()
            self._dim = dim
            self.register_buffer("_permutation", permutation)

        @property
        def _inverse_permutation(self):
            return torch.argsort(self._permutation)

        @staticmethod
        def _permute(inputs, permutation, dim):
            if inputs.shape[dim] != len(permutation):
                raise ValueError("Dimension {} in inputs must be of size {}.".format(dim, len(permutation)))
            batch_size = inputs.shape[0]
            outputs = torch.index_select(inputs, dim, permutation)
            logabsdet = inputs.new_zeros(batch_size)
            return outputs, logabsdet

        def forward(self, inputs, context=None):
            return self._permute(inputs, self._permutation, self._dim)

        def inverse(self, inputs, context=None):
            return self._permute(inputs, self._inverse_permutation, self._dim)

    class RandomPermutation(Permutation):
        """Permutes using a random, but fixed, permutation. Only works with 1D inputs."""

        def __init__(self, features, dim=1):
            super().__init__(torch.randperm(features), dim)

    class CouplingTransform(Transform):
        """A base class for coupling layers. Supports 2D inputs (NxD), as well as 4D inputs for images (NxCxHxW)."""

        def __init__(self, mask, transform_net_create_fn, unconditional_transform=None):
            mask = torch.as_tensor(mask)
            if mask.dim() != 1:
                raise ValueError("Mask must be a 1-dim tensor.")
            if mask.numel() <= 0:
                raise ValueError("Mask can't be empty.")

            super().__init__()
            self.features = len(mask)
            features_vector = torch.arange(self.features)

            self.register_buffer(
                "identity_features", features_vector.masked_select(mask <= 0)
            )
            self.register_buffer(
                "transform_features", features_vector.masked_select(mask > 0)
            )

            assert self.num_identity_features + self.num_transform_features == self.features

            self.transform_net = transform_net_create_fn(
                self.num_identity_features,
                self.num_transform_features * self._transform_dim_multiplier(),
            )

            if unconditional_transform is None:
                self.unconditional_transform = None
            else:
                self.unconditional_transform = unconditional_transform(
                    features=self.num_identity_features
                )

        @property
        def num_identity_features(self):
            return len(self.identity_features)

        @property
        def num_transform_features(self):
            return len(self.transform_features)

        def forward(self, inputs, context=None):
            if inputs.dim() not in [2, 4]:
                raise ValueError("Inputs must be a 2D or a 4D tensor.")

            if inputs.shape[1] != self.features:
                raise ValueError(
                    "Expected features = {}, got {}.".format(self.features, inputs.shape[1])
                )

            identity_split = inputs[:, self.identity_features, ...]
            transform_split = inputs[:, self.transform_features, ...]

            transform_params = self.transform_net(identity_split, context)
            transform_split, logabsdet = self._coupling_transform_forward(
                inputs=transform_split, transform_params=transform_params
            )

            if self.unconditional_transform is not None:
                identity_split, logabsdet_identity = self.unconditional_transform(
                    identity_split, context
                )
                logabsdet += logabsdet_identity

            outputs = torch.empty_like(inputs)
            outputs[:, self.identity_features, ...] = identity_split
            outputs[:, self.transform_features, ...] = transform_split

            return outputs, logabsdet

        def inverse(self, inputs, context=None):
            if inputs.dim() not in [2, 4]:
                raise ValueError("Inputs must be a 2D or a 4D tensor.")

            if inputs.shape[1] != self.features:
                raise ValueError(
                    "Expected features = {}, got {}.".format(self.features, inputs.shape[1])
                )

            identity_split = inputs[:, self.identity_features, ...]
            transform_split = inputs[:, self.transform_features, ...]

            logabsdet = 0.0
            if self.unconditional_transform is not None:
                identity_split, logabsdet = self.unconditional_transform.inverse(
                    identity_split, context
                )

            transform_params = self.transform_net(identity_split, context)
            transform_split, logabsdet_split = self._coupling_transform_inverse(
                inputs=transform_split, transform_params=transform_params
            )
            logabsdet += logabsdet_split

            outputs = torch.empty_like(inputs)
            outputs[:, self.identity_features] = identity_split
            outputs[:, self.transform_features] = transform_split

            return outputs, logabsdet

        def _transform_dim_multiplier(self):
            """Number of features to output for each transform dimension."""
            raise NotImplementedError()

        def _coupling_transform_forward(self, inputs, transform_params):
            """Forward pass of the coupling transform."""
            raise NotImplementedError()

        def _coupling_transform_inverse(self, inputs, transform_params):
            """Inverse of the coupling transform."""
            raise NotImplementedError()

    class PiecewiseCouplingTransform(CouplingTransform):
        def _coupling_transform_forward(self, inputs, transform_params):
            return self._coupling_transform(inputs, transform_params, inverse=False)

        def _coupling_transform_inverse(self, inputs, transform_params):
            return self._coupling_transform(inputs, transform_params, inverse=True)

        def _coupling_transform(self, inputs, transform_params, inverse=False):
            if inputs.dim() == 4:
                b, c, h, w = inputs.shape
                # For images, reshape transform_params from Bx(C*?)xHxW to BxCxHxWx?
                transform_params = transform_params.reshape(b, c, -1, h, w).permute(
                    0, 1, 3, 4, 2
                )
            elif inputs.dim() == 2:
                b, d = inputs.shape
                # For 2D data, reshape transform_params from Bx(D*?) to BxDx?
                transform_params = transform_params.reshape(b, d, -1)

            outputs, logabsdet = self._piecewise_cdf(inputs, transform_params, inverse)

            return outputs, sum_except_batch(logabsdet)

        def _piecewise_cdf(self, inputs, transform_params, inverse=False):
            raise NotImplementedError()

    class PiecewiseRationalQuadraticCouplingTransform(PiecewiseCouplingTransform):
        def __init__(
            self,
            mask,
            transform_net_create_fn,
            num_bins=10,
            tails=None,
            tail_bound=1.0,
            apply_unconditional_transform=False,
            img_shape=None,
            min_bin_width=DEFAULT_MIN_BIN_WIDTH,
            min_bin_height=DEFAULT_MIN_BIN_HEIGHT,
            min_derivative=DEFAULT_MIN_DERIVATIVE,
        ):
            self.num_bins = num_bins
            self.min_bin_width = min_bin_width
            self.min_bin_height = min_bin_height
            self.min_derivative = min_derivative
            self.tails = tails
            self.tail_bound = tail_bound

            super().__init__(mask, transform_net_create_fn, unconditional_transform=None)

        def _transform_dim_multiplier(self):
            if self.tails == "linear":
                return self.num_bins * 3 - 1
            else:
                return self.num_bins * 3 + 1

        def _piecewise_cdf(self, inputs, transform_params, inverse=False):
            unnormalized_widths = transform_params[..., : self.num_bins]
            unnormalized_heights = transform_params[..., self.num_bins : 2 * self.num_bins]
            unnormalized_derivatives = transform_params[..., 2 * self.num_bins :]

            if hasattr(self.transform_net, "hidden_features"):
                unnormalized_widths /= np.sqrt(self.transform_net.hidden_features)
                unnormalized_heights /= np.sqrt(self.transform_net.hidden_features)
            elif hasattr(self.transform_net, "hidden_channels"):
                unnormalized_widths /= np.sqrt(self.transform_net.hidden_channels)
                unnormalized_heights /= np.sqrt(self.transform_net.hidden_channels)

            if self.tails is None:
                spline_fn = rational_quadratic_spline
                spline_kwargs = {}
            else:
                spline_fn = unconstrained_rational_quadratic_spline
                spline_kwargs = {"tails": self.tails, "tail_bound": self.tail_bound}

            return spline_fn(
                inputs=inputs,
                unnormalized_widths=unnormalized_widths,
                unnormalized_heights=unnormalized_heights,
                unnormalized_derivatives=unnormalized_derivatives,
                inverse=inverse,
                min_bin_width=self.min_bin_width,
                min_bin_height=self.min_bin_height,
                min_derivative=self.min_derivative,
                **spline_kwargs
            )

    class Distribution(nn.Module):
        """Base class for all distribution objects."""

        def forward(self, *args):
            raise RuntimeError("Forward method cannot be called for a Distribution object.")

        def log_prob(self, inputs, context=None):
            inputs = torch.as_tensor(inputs)
            if context is not None:
                context = torch.as_tensor(context)
                if inputs.shape[0] != context.shape[0]:
                    raise ValueError("Number of input items must be equal to number of context items.")
            return self._log_prob(inputs, context)

        def sample(self, num_samples, context=None, batch_size=None):
            if context is None and batch_size is None:
                return self._sample(num_samples, context)
            raise NotImplementedError("batched or conditional sampling is left out of the probe")

    class StandardNormal(Distribution):
        """A multivariate Normal with zero mean and unit covariance."""

        def __init__(self, shape):
            super().__init__()
            self._shape = torch.Size(shape)

            self.register_buffer("_log_z",
                                 torch.tensor(0.5 * np.prod(shape) * np.log(2 * np.pi),
                                              dtype=torch.float64),
                                 persistent=False)

        def _log_prob(self, inputs, context):
            # Note: the context is ignored.
            if inputs.shape[1:] != self._shape:
                raise ValueError(
                    "Expected input of shape {}, got {}".format(self._shape, inputs.shape[1:])
                )
            neg_energy = -0.5 * \
                sum_except_batch(inputs ** 2, num_batch_dims=1)
            return neg_energy - self._log_z

        def _sample(self, num_samples, context):
            if context is None:
                return torch.randn(num_samples, *self._shape, device=self._log_z.device)
            raise NotImplementedError("conditional sampling is left out of the probe")

    class Flow(Distribution):
        """Base class for all flow objects."""

        def __init__(self, transform, distribution, embedding_net=None):
            super().__init__()
            self._transform = transform
            self._distribution = distribution
            if embedding_net is not None:
                assert isinstance(embedding_net, nn.Module)
                self._embedding_net = embedding_net
            else:
                self._embedding_net = nn.Identity()

        def _log_prob(self, inputs, context):
            embedded_context = self._embedding_net(context)
            noise, logabsdet = self._transform(inputs, context=embedded_context)
            log_prob = self._distribution.log_prob(noise, context=embedded_context)
            return log_prob + logabsdet

        def _sample(self, num_samples, context):
            embedded_context = self._embedding_net(context)
            noise = self._distribution.sample(num_samples, context=embedded_context)
            samples, _ = self._transform.inverse(noise, context=embedded_context)
            return samples

    return dict(ResidualNet=ResidualNet, RandomPermutation=RandomPermutation,
                PiecewiseRationalQuadraticCouplingTransform=PiecewiseRationalQuadraticCouplingTransform,
                CompositeTransform=CompositeTransform, StandardNormal=StandardNormal, Flow=Flow,
                create_alternating_binary_mask=create_alternating_binary_mask)


def make_moons(n_samples=128, noise=0.1, seed=0):
    """sklearn's ``datasets.make_moons`` (shuffled, with Gaussian noise) in NumPy, from a seeded generator."""
    rng = np.random.default_rng(seed)
    n_out, n_in = n_samples // 2, n_samples - n_samples // 2
    outer = np.stack([np.cos(np.linspace(0, np.pi, n_out)), np.sin(np.linspace(0, np.pi, n_out))], 1)
    inner = np.stack([1 - np.cos(np.linspace(0, np.pi, n_in)), 1 - np.sin(np.linspace(0, np.pi, n_in)) - 0.5], 1)
    x = np.concatenate([outer, inner]) + noise * rng.standard_normal((n_samples, 2))
    return x[rng.permutation(n_samples)]
