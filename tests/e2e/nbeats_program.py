"""N-BEATS, tiny, twice: philipperemy/n-beats' ``NBeatsNet`` and ElementAI/N-BEATS' ``NBeats`` with its losses,
each written once for ``torch`` being torch or kiln: the program of ``test_porting_probes_tabnet_nbeats_mae.py``, whose
docstring says what it covers."""

from __future__ import annotations

import numpy as np


# --- N-BEATS: philipperemy/n-beats nbeats_pytorch/model.py -----------------------------------------------------------


BACKCAST, FORECAST, UNITS, SERIES = 8, 4, 16, 6


def nbeats(torch, nn, F, stack_types=("trend", "seasonality", "generic"), share_weights_in_stack=False,
           basis_float=True):
    """model.py's ``NBeatsNet`` as written (its ``print`` lines left out): the blocks live in plain lists, their
    parameters in ``self.parameters = nn.ParameterList(...)`` (shadowing the method's name, as the reference does);
    ``basis_float`` False writes ``.double()`` for the bases' ``.float()`` (float64 runs: torch's ``mm`` does not mix
    dtypes)."""

    def basis(array):
        return array.float() if basis_float else array.double()

    class NBeatsNet(nn.Module):
        SEASONALITY_BLOCK = 'seasonality'
        TREND_BLOCK = 'trend'
        GENERIC_BLOCK = 'generic'

        def __init__(self, device=torch.device('cpu'), stack_types=(TREND_BLOCK, SEASONALITY_BLOCK),
                     nb_blocks_per_stack=3, forecast_length=5, backcast_length=10, thetas_dim=(4, 8),
                     share_weights_in_stack=False, hidden_layer_units=256, nb_harmonics=None):
            super(NBeatsNet, self).__init__()
            self.forecast_length = forecast_length
            self.backcast_length = backcast_length
            self.hidden_layer_units = hidden_layer_units
            self.nb_blocks_per_stack = nb_blocks_per_stack
            self.share_weights_in_stack = share_weights_in_stack
            self.nb_harmonics = nb_harmonics
            self.stack_types = stack_types
            self.stacks = []
            self.thetas_dim = thetas_dim
            self.parameters = []
            self.device = device
            for stack_id in range(len(self.stack_types)):
                self.stacks.append(self.create_stack(stack_id))
            self.parameters = nn.ParameterList(self.parameters)
            self.to(self.device)
            self._loss = None
            self._opt = None
            self._gen_intermediate_outputs = False
            self._intermediary_outputs = []

        def create_stack(self, stack_id):
            stack_type = self.stack_types[stack_id]
            blocks = []
            for block_id in range(self.nb_blocks_per_stack):
                block_init = NBeatsNet.select_block(stack_type)
                if self.share_weights_in_stack and block_id != 0:
                    block = blocks[-1]  # pick up the last one when we share weights.
                else:
                    block = block_init(self.hidden_layer_units, self.thetas_dim[stack_id], self.device,
                                       self.backcast_length, self.forecast_length, self.nb_harmonics)
                    self.parameters.extend(block.parameters())
                blocks.append(block)
            return blocks

        @staticmethod
        def select_block(block_type):
            if block_type == NBeatsNet.SEASONALITY_BLOCK:
                return SeasonalityBlock
            elif block_type == NBeatsNet.TREND_BLOCK:
                return TrendBlock
            else:
                return GenericBlock

        def get_generic_and_interpretable_outputs(self):
            g_pred = sum([a['value'][0] for a in self._intermediary_outputs if 'generic' in a['layer'].lower()])
            i_pred = sum([a['value'][0] for a in self._intermediary_outputs if 'generic' not in a['layer'].lower()])
            outputs = {o['layer']: o['value'][0] for o in self._intermediary_outputs}
            return g_pred, i_pred, outputs

        def forward(self, backcast):
            self._intermediary_outputs = []
            backcast = squeeze_last_dim(backcast)
            forecast = torch.zeros(size=(backcast.size()[0], self.forecast_length,))  # maybe batch size here.
            for stack_id in range(len(self.stacks)):
                for block_id in range(len(self.stacks[stack_id])):
                    b, f = self.stacks[stack_id][block_id](backcast)
                    backcast = backcast.to(self.device) - b
                    forecast = forecast.to(self.device) + f
                    block_type = self.stacks[stack_id][block_id].__class__.__name__
                    layer_name = f'stack_{stack_id}-{block_type}_{block_id}'
                    if self._gen_intermediate_outputs:
                        self._intermediary_outputs.append({'value': f.detach().numpy(), 'layer': layer_name})
            return backcast, forecast

    def squeeze_last_dim(tensor):
        if len(tensor.shape) == 3 and tensor.shape[-1] == 1:  # (128, 10, 1) => (128, 10).
            return tensor[..., 0]
        return tensor

    def seasonality_model(thetas, t, device):
        p = thetas.size()[-1]
        assert p <= thetas.shape[1], 'thetas_dim is too big.'
        p1, p2 = (p // 2, p // 2) if p % 2 == 0 else (p // 2, p // 2 + 1)
        s1 = basis(torch.tensor(np.array([np.cos(2 * np.pi * i * t) for i in range(p1)])))  # H/2-1
        s2 = basis(torch.tensor(np.array([np.sin(2 * np.pi * i * t) for i in range(p2)])))
        S = torch.cat([s1, s2])
        return thetas.mm(S.to(device))

    def trend_model(thetas, t, device):
        p = thetas.size()[-1]
        assert p <= 4, 'thetas_dim is too big.'
        T = basis(torch.tensor(np.array([t ** i for i in range(p)])))
        return thetas.mm(T.to(device))

    def linear_space(backcast_length, forecast_length, is_forecast=True):
        horizon = forecast_length if is_forecast else backcast_length
        return np.arange(0, horizon) / horizon

    class Block(nn.Module):
        def __init__(self, units, thetas_dim, device, backcast_length=10, forecast_length=5, share_thetas=False,
                     nb_harmonics=None):
            super(Block, self).__init__()
            self.units = units
            self.thetas_dim = thetas_dim
            self.backcast_length = backcast_length
            self.forecast_length = forecast_length
            self.share_thetas = share_thetas
            self.fc1 = nn.Linear(backcast_length, units)
            self.fc2 = nn.Linear(units, units)
            self.fc3 = nn.Linear(units, units)
            self.fc4 = nn.Linear(units, units)
            self.device = device
            self.backcast_linspace = linear_space(backcast_length, forecast_length, is_forecast=False)
            self.forecast_linspace = linear_space(backcast_length, forecast_length, is_forecast=True)
            if share_thetas:
                self.theta_f_fc = self.theta_b_fc = nn.Linear(units, thetas_dim, bias=False)
            else:
                self.theta_b_fc = nn.Linear(units, thetas_dim, bias=False)
                self.theta_f_fc = nn.Linear(units, thetas_dim, bias=False)

        def forward(self, x):
            x = squeeze_last_dim(x)
            x = F.relu(self.fc1(x.to(self.device)))
            x = F.relu(self.fc2(x))
            x = F.relu(self.fc3(x))
            x = F.relu(self.fc4(x))
            return x

    class SeasonalityBlock(Block):
        def __init__(self, units, thetas_dim, device, backcast_length=10, forecast_length=5, nb_harmonics=None):
            if nb_harmonics:
                super(SeasonalityBlock, self).__init__(units, nb_harmonics, device, backcast_length,
                                                       forecast_length, share_thetas=True)
            else:
                super(SeasonalityBlock, self).__init__(units, forecast_length, device, backcast_length,
                                                       forecast_length, share_thetas=True)

        def forward(self, x):
            x = super(SeasonalityBlock, self).forward(x)
            backcast = seasonality_model(self.theta_b_fc(x), self.backcast_linspace, self.device)
            forecast = seasonality_model(self.theta_f_fc(x), self.forecast_linspace, self.device)
            return backcast, forecast

    class TrendBlock(Block):
        def __init__(self, units, thetas_dim, device, backcast_length=10, forecast_length=5, nb_harmonics=None):
            super(TrendBlock, self).__init__(units, thetas_dim, device, backcast_length,
                                             forecast_length, share_thetas=True)

        def forward(self, x):
            x = super(TrendBlock, self).forward(x)
            backcast = trend_model(self.theta_b_fc(x), self.backcast_linspace, self.device)
            forecast = trend_model(self.theta_f_fc(x), self.forecast_linspace, self.device)
            return backcast, forecast

    class GenericBlock(Block):
        def __init__(self, units, thetas_dim, device, backcast_length=10, forecast_length=5, nb_harmonics=None):
            super(GenericBlock, self).__init__(units, thetas_dim, device, backcast_length, forecast_length)

            self.backcast_fc = nn.Linear(thetas_dim, backcast_length)
            self.forecast_fc = nn.Linear(thetas_dim, forecast_length)

        def forward(self, x):
            # no constraint for generic arch.
            x = super(GenericBlock, self).forward(x)

            theta_b = self.theta_b_fc(x)
            theta_f = self.theta_f_fc(x)

            backcast = self.backcast_fc(theta_b)  # generic. 3.3.
            forecast = self.forecast_fc(theta_f)  # generic. 3.3.

            return backcast, forecast

    return NBeatsNet(stack_types=stack_types, nb_blocks_per_stack=2, forecast_length=FORECAST,
                     backcast_length=BACKCAST, thetas_dim=(3, 4, 5), share_weights_in_stack=share_weights_in_stack,
                     hidden_layer_units=UNITS)


# --- N-BEATS: ElementAI/N-BEATS models/nbeats.py -------------------------------------------------------------------


def elementai_nbeats(t, nn, F, interpretable=True, basis_dtype=None):
    """models/nbeats.py's ``NBeats`` (``flip``, ``x[:, -1:]``, masked residuals) with the interpretable factory (one
    trend and one seasonality block, each repeated in the ``ModuleList``: shared weights) or the generic one; the
    bases are frozen ``nn.Parameter``s in ``basis_dtype`` (the reference's ``t.float32``; float64 runs: ``einsum``
    does not mix dtypes); ``np.float`` is ``np.float64`` (NumPy 1.24 removed the alias)."""
    basis_dtype = basis_dtype or t.float32

    class NBeatsBlock(t.nn.Module):
        def __init__(self, input_size, theta_size: int, basis_function: t.nn.Module, layers: int, layer_size: int):
            super().__init__()
            self.layers = t.nn.ModuleList([t.nn.Linear(in_features=input_size, out_features=layer_size)] +
                                          [t.nn.Linear(in_features=layer_size, out_features=layer_size)
                                           for _ in range(layers - 1)])
            self.basis_parameters = t.nn.Linear(in_features=layer_size, out_features=theta_size)
            self.basis_function = basis_function

        def forward(self, x: t.Tensor):
            block_input = x
            for layer in self.layers:
                block_input = t.relu(layer(block_input))
            basis_parameters = self.basis_parameters(block_input)
            return self.basis_function(basis_parameters)

    class NBeats(t.nn.Module):
        def __init__(self, blocks: t.nn.ModuleList):
            super().__init__()
            self.blocks = blocks

        def forward(self, x: t.Tensor, input_mask: t.Tensor) -> t.Tensor:
            residuals = x.flip(dims=(1,))
            input_mask = input_mask.flip(dims=(1,))
            forecast = x[:, -1:]
            for i, block in enumerate(self.blocks):
                backcast, block_forecast = block(residuals)
                residuals = (residuals - backcast) * input_mask
                forecast = forecast + block_forecast
            return forecast

    class GenericBasis(t.nn.Module):
        def __init__(self, backcast_size: int, forecast_size: int):
            super().__init__()
            self.backcast_size = backcast_size
            self.forecast_size = forecast_size

        def forward(self, theta: t.Tensor):
            return theta[:, :self.backcast_size], theta[:, -self.forecast_size:]

    class TrendBasis(t.nn.Module):
        def __init__(self, degree_of_polynomial: int, backcast_size: int, forecast_size: int):
            super().__init__()
            self.polynomial_size = degree_of_polynomial + 1  # degree of polynomial with constant term
            self.backcast_time = t.nn.Parameter(
                t.tensor(np.concatenate([np.power(np.arange(backcast_size, dtype=np.float64) / backcast_size, i)[None, :]
                                         for i in range(self.polynomial_size)]), dtype=basis_dtype),
                requires_grad=False)
            self.forecast_time = t.nn.Parameter(
                t.tensor(np.concatenate([np.power(np.arange(forecast_size, dtype=np.float64) / forecast_size, i)[None, :]
                                         for i in range(self.polynomial_size)]), dtype=basis_dtype),
                requires_grad=False)

        def forward(self, theta: t.Tensor):
            backcast = t.einsum('bp,pt->bt', theta[:, self.polynomial_size:], self.backcast_time)
            forecast = t.einsum('bp,pt->bt', theta[:, :self.polynomial_size], self.forecast_time)
            return backcast, forecast

    class SeasonalityBasis(t.nn.Module):
        def __init__(self, harmonics: int, backcast_size: int, forecast_size: int):
            super().__init__()
            self.frequency = np.append(np.zeros(1, dtype=np.float32),
                                       np.arange(harmonics, harmonics / 2 * forecast_size,
                                                 dtype=np.float32) / harmonics)[None, :]
            backcast_grid = -2 * np.pi * (
                np.arange(backcast_size, dtype=np.float32)[:, None] / forecast_size) * self.frequency
            forecast_grid = 2 * np.pi * (
                np.arange(forecast_size, dtype=np.float32)[:, None] / forecast_size) * self.frequency
            self.backcast_cos_template = t.nn.Parameter(t.tensor(np.transpose(np.cos(backcast_grid)),
                                                                 dtype=basis_dtype), requires_grad=False)
            self.backcast_sin_template = t.nn.Parameter(t.tensor(np.transpose(np.sin(backcast_grid)),
                                                                 dtype=basis_dtype), requires_grad=False)
            self.forecast_cos_template = t.nn.Parameter(t.tensor(np.transpose(np.cos(forecast_grid)),
                                                                 dtype=basis_dtype), requires_grad=False)
            self.forecast_sin_template = t.nn.Parameter(t.tensor(np.transpose(np.sin(forecast_grid)),
                                                                 dtype=basis_dtype), requires_grad=False)

        def forward(self, theta: t.Tensor):
            params_per_harmonic = theta.shape[1] // 4
            backcast_harmonics_cos = t.einsum('bp,pt->bt', theta[:, 2 * params_per_harmonic:3 * params_per_harmonic],
                                              self.backcast_cos_template)
            backcast_harmonics_sin = t.einsum('bp,pt->bt', theta[:, 3 * params_per_harmonic:],
                                              self.backcast_sin_template)
            backcast = backcast_harmonics_sin + backcast_harmonics_cos
            forecast_harmonics_cos = t.einsum('bp,pt->bt', theta[:, :params_per_harmonic],
                                              self.forecast_cos_template)
            forecast_harmonics_sin = t.einsum('bp,pt->bt', theta[:, params_per_harmonic:2 * params_per_harmonic],
                                              self.forecast_sin_template)
            forecast = forecast_harmonics_sin + forecast_harmonics_cos
            return backcast, forecast

    def interpretable_model(input_size, output_size, trend_blocks, trend_layers, trend_layer_size,
                            degree_of_polynomial, seasonality_blocks, seasonality_layers, seasonality_layer_size,
                            num_of_harmonics):
        trend_block = NBeatsBlock(input_size=input_size,
                                  theta_size=2 * (degree_of_polynomial + 1),
                                  basis_function=TrendBasis(degree_of_polynomial=degree_of_polynomial,
                                                            backcast_size=input_size,
                                                            forecast_size=output_size),
                                  layers=trend_layers,
                                  layer_size=trend_layer_size)
        seasonality_block = NBeatsBlock(input_size=input_size,
                                        theta_size=4 * int(
                                            np.ceil(num_of_harmonics / 2 * output_size) - (num_of_harmonics - 1)),
                                        basis_function=SeasonalityBasis(harmonics=num_of_harmonics,
                                                                        backcast_size=input_size,
                                                                        forecast_size=output_size),
                                        layers=seasonality_layers,
                                        layer_size=seasonality_layer_size)
        return NBeats(t.nn.ModuleList(
            [trend_block for _ in range(trend_blocks)] + [seasonality_block for _ in range(seasonality_blocks)]))

    def generic_model(input_size: int, output_size: int, stacks: int, layers: int, layer_size: int):
        return NBeats(t.nn.ModuleList([NBeatsBlock(input_size=input_size,
                                                   theta_size=input_size + output_size,
                                                   basis_function=GenericBasis(backcast_size=input_size,
                                                                               forecast_size=output_size),
                                                   layers=layers,
                                                   layer_size=layer_size)
                                       for _ in range(stacks)]))

    if interpretable:
        return interpretable_model(BACKCAST, FORECAST, trend_blocks=2, trend_layers=2, trend_layer_size=UNITS,
                                   degree_of_polynomial=2, seasonality_blocks=2, seasonality_layers=2,
                                   seasonality_layer_size=UNITS, num_of_harmonics=1)
    return generic_model(BACKCAST, FORECAST, stacks=3, layers=2, layer_size=UNITS)


# --- N-BEATS: ElementAI/N-BEATS common/torch/losses.py and experiments/trainer.py ---------------------------------


def nbeats_losses(t):
    """losses.py as written (``t`` is ``torch``)."""

    def divide_no_nan(a, b):
        """a/b where the resulted NaN or Inf are replaced by 0."""
        result = a / b
        result[result != result] = .0
        result[result == np.inf] = .0
        return result

    def mape_loss(forecast, target, mask):
        weights = divide_no_nan(mask, target)
        return t.mean(t.abs((forecast - target) * weights))

    def smape_2_loss(forecast, target, mask):
        return 200 * t.mean(divide_no_nan(t.abs(forecast - target),
                                          t.abs(forecast.data) + t.abs(target.data)) * mask)

    def mase_loss(insample, freq, forecast, target, mask):
        masep = t.mean(t.abs(insample[:, freq:] - insample[:, :-freq]), dim=1)
        masked_masep_inv = divide_no_nan(mask, masep[:, None])
        return t.mean(t.abs(target - forecast) * masked_masep_inv)

    def __loss_fn(loss_name):
        def loss(x, freq, forecast, target, target_mask):
            if loss_name == 'MAPE':
                return mape_loss(forecast, target, target_mask)
            elif loss_name == 'MASE':
                return mase_loss(x, freq, forecast, target, target_mask)
            elif loss_name == 'SMAPE':
                return smape_2_loss(forecast, target, target_mask)
            else:
                raise Exception(f'Unknown loss function: {loss_name}')
        return loss

    return __loss_fn
