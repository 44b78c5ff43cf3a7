"""vsitzmann/siren's hypernetwork (``meta_modules.py``'s ``HyperNetwork``, ``modules.py``'s ``BatchLinear``,
``FCBlock`` and the SIREN inits), with the two torchmeta pieces it stands on (``MetaSequential``, ``get_subdict``)
written out, as a function of ``(torch, nn, F)`` (``torch`` is ``torch`` or ``kiln``) for
``test_porting_probes_deq_np_siren.py``.

What it exercises: ``BatchLinear``'s ``input.matmul(weight.permute(*[i for i in range(len(weight.shape) - 2)], -1,
-2))`` and ``output += bias.unsqueeze(-2)`` on per-sample weights, parameters passed as an ``OrderedDict`` by
``params=`` and split by regular expressions, ``int(torch.prod(torch.tensor(param.size())))``, ``(-1,) +
param.size()`` reshapes, ``hyper_weight_init``'s ``nn.init.kaiming_normal_`` then ``m.weight.data = m.weight.data /
1.e2``, ``sine_init``/``first_layer_sine_init`` by ``module.apply`` under ``torch.no_grad()``.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np


def siren_hypernetwork(torch, nn, F, latent_dim=3, hidden=8, hyper_hidden=8, num_images=4):
    # --- torchmeta: MetaModule's parameter dictionaries ---------------------------------------------------------------

    def get_subdict(dictionary, key=None):
        if dictionary is None:
            return None
        if (key is None) or (key == ''):
            return dictionary
        key_re = re.compile(r'^{0}\.(.+)'.format(re.escape(key)))
        return OrderedDict((key_re.sub(r'\1', k), value) for (k, value) in dictionary.items()
                           if key_re.match(k) is not None)

    class MetaModule(nn.Module):
        def meta_named_parameters(self, prefix='', recurse=True):
            return self.named_parameters(prefix=prefix, recurse=recurse)

    class MetaSequential(nn.Sequential, MetaModule):
        def forward(self, input, params=None):
            for name, module in self._modules.items():
                if isinstance(module, MetaModule):
                    input = module(input, params=get_subdict(params, name))
                else:
                    input = module(input)
            return input

    # --- modules.py -----------------------------------------------------------------------------------------------

    class BatchLinear(nn.Linear, MetaModule):
        '''A linear meta-layer that can deal with batched weight matrices and biases, as for instance output by a
        hypernetwork.'''

        def forward(self, input, params=None):
            if params is None:
                params = OrderedDict(self.named_parameters())
            bias = params.get('bias', None)
            weight = params['weight']
            output = input.matmul(weight.permute(*[i for i in range(len(weight.shape) - 2)], -1, -2))
            output += bias.unsqueeze(-2)
            return output

    class Sine(nn.Module):
        def forward(self, input):
            # See paper sec. 3.2, final paragraph, and supplement Sec. 1.5 for discussion of factor 30
            return torch.sin(30 * input)

    def init_weights_normal(m):
        if type(m) == BatchLinear or type(m) == nn.Linear:  # noqa: E721 (as modules.py writes it)
            if hasattr(m, 'weight'):
                nn.init.kaiming_normal_(m.weight, a=0.0, nonlinearity='relu', mode='fan_in')

    def sine_init(m):
        with torch.no_grad():
            if hasattr(m, 'weight'):
                num_input = m.weight.size(-1)
                # See supplement Sec. 1.5 for discussion of factor 30
                m.weight.uniform_(-np.sqrt(6 / num_input) / 30, np.sqrt(6 / num_input) / 30)

    def first_layer_sine_init(m):
        with torch.no_grad():
            if hasattr(m, 'weight'):
                num_input = m.weight.size(-1)
                # See paper sec. 3.2, final paragraph, and supplement Sec. 1.5 for discussion of factor 30
                m.weight.uniform_(-1 / num_input, 1 / num_input)

    class FCBlock(MetaModule):
        def __init__(self, in_features, out_features, num_hidden_layers, hidden_features, outermost_linear=False,
                     nonlinearity='relu', weight_init=None):
            super().__init__()
            self.first_layer_init = None
            nls_and_inits = {'sine': (Sine(), sine_init, first_layer_sine_init),
                             'relu': (nn.ReLU(inplace=True), init_weights_normal, None)}
            nl, nl_weight_init, first_layer_init = nls_and_inits[nonlinearity]
            if weight_init is not None:  # Overwrite weight init if passed
                self.weight_init = weight_init
            else:
                self.weight_init = nl_weight_init
            self.net = []
            self.net.append(MetaSequential(BatchLinear(in_features, hidden_features), nl))
            for i in range(num_hidden_layers):
                self.net.append(MetaSequential(BatchLinear(hidden_features, hidden_features), nl))
            if outermost_linear:
                self.net.append(MetaSequential(BatchLinear(hidden_features, out_features)))
            else:
                self.net.append(MetaSequential(BatchLinear(hidden_features, out_features), nl))
            self.net = MetaSequential(*self.net)
            if self.weight_init is not None:
                self.net.apply(self.weight_init)
            if first_layer_init is not None:  # Apply special initialization to first layer, if applicable.
                self.net[0].apply(first_layer_init)

        def forward(self, coords, params=None, **kwargs):
            if params is None:
                params = OrderedDict(self.named_parameters())
            output = self.net(coords, params=get_subdict(params, 'net'))
            return output

    # --- meta_modules.py ------------------------------------------------------------------------------------------

    def hyper_weight_init(m, in_features_main_net):
        if hasattr(m, 'weight'):
            nn.init.kaiming_normal_(m.weight, a=0.0, nonlinearity='relu', mode='fan_in')
            m.weight.data = m.weight.data / 1.e2
        if hasattr(m, 'bias'):
            with torch.no_grad():
                m.bias.uniform_(-1 / in_features_main_net, 1 / in_features_main_net)

    def hyper_bias_init(m):
        if hasattr(m, 'weight'):
            nn.init.kaiming_normal_(m.weight, a=0.0, nonlinearity='relu', mode='fan_in')
            m.weight.data = m.weight.data / 1.e2
        if hasattr(m, 'bias'):
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
            with torch.no_grad():
                m.bias.uniform_(-1 / fan_in, 1 / fan_in)

    class HyperNetwork(nn.Module):
        def __init__(self, hyper_in_features, hyper_hidden_layers, hyper_hidden_features, hypo_module):
            super().__init__()
            hypo_parameters = hypo_module.meta_named_parameters()
            self.names = []
            self.nets = nn.ModuleList()
            self.param_shapes = []
            for name, param in hypo_parameters:
                self.names.append(name)
                self.param_shapes.append(param.size())
                hn = FCBlock(in_features=hyper_in_features, out_features=int(torch.prod(torch.tensor(param.size()))),
                             num_hidden_layers=hyper_hidden_layers, hidden_features=hyper_hidden_features,
                             outermost_linear=True, nonlinearity='relu')
                self.nets.append(hn)
                if 'weight' in name:
                    self.nets[-1].net[-1].apply(lambda m: hyper_weight_init(m, param.size()[-1]))
                elif 'bias' in name:
                    self.nets[-1].net[-1].apply(lambda m: hyper_bias_init(m))

        def forward(self, z):
            params = OrderedDict()
            for name, net, param_shape in zip(self.names, self.nets, self.param_shapes):
                batch_param_shape = (-1,) + param_shape
                params[name] = net(z).reshape(batch_param_shape)
            return params

    class HypernetworkSiren(nn.Module):
        """An auto-decoder over images: a latent code per image (``nn.Embedding``), the hypernetwork's SIREN
        weights for it, the SIREN evaluated at the image's coordinates (meta_modules' ``HyperNetwork`` use)."""

        def __init__(self):
            super().__init__()
            self.latents = nn.Embedding(num_images, latent_dim)
            nn.init.normal_(self.latents.weight, mean=0, std=0.01)
            self.hypo_net = FCBlock(in_features=2, out_features=1, num_hidden_layers=1, hidden_features=hidden,
                                    outermost_linear=True, nonlinearity='sine')
            self.hyper_net = HyperNetwork(hyper_in_features=latent_dim, hyper_hidden_layers=1,
                                          hyper_hidden_features=hyper_hidden, hypo_module=self.hypo_net)

        def forward(self, model_input):
            embedding = self.latents(model_input['idx'])
            hypo_params = self.hyper_net(embedding)
            model_output = self.hypo_net(model_input['coords'], params=hypo_params)
            return {'model_in': model_input['coords'], 'model_out': model_output, 'latent_vec': embedding,
                    'hypo_params': hypo_params}

    return HypernetworkSiren()


def hypernetwork_losses(torch, model_output, gt, kl=1e-1, fw=1e2):
    """loss_functions.py's ``image_hypernetwork_loss`` (no mask): the image MSE, ``kl * latent_loss`` and
    ``fw * hypo_weight_loss``."""

    def latent_loss(model_output):
        return torch.mean(model_output['latent_vec'] ** 2)

    def hypo_weight_loss(model_output):
        weight_sum = 0
        total_weights = 0
        for weight in model_output['hypo_params'].values():
            weight_sum += torch.sum(weight ** 2)
            total_weights += weight.numel()
        return weight_sum * (1 / total_weights)

    return {'img_loss': ((model_output['model_out'] - gt['img']) ** 2).mean(),
            'latent_loss': kl * latent_loss(model_output),
            'hypo_weight_loss': fw * hypo_weight_loss(model_output)}
