"""Dreamer(V2) as jsikyoon/dreamer-torch writes it (networks.py's RSSM and heads, tools.py's helpers, models.py's
``WorldModel`` and ``ImagBehavior``), tiny, written once for ``torch`` being torch or kiln: the program of
``test_porting_probes_td3_dreamer_dt.py``, whose docstring says what it covers."""

from __future__ import annotations

import numpy as np


# --- Dreamer(V2): jsikyoon/dreamer-torch's networks.py, tools.py and models.py --------------------------------------

OBS, EMBED, ACTIONS, STOCH, DISCRETE, DETER, UNITS, T_SEQ, B_SEQ, HORIZON = 5, 6, 3, 4, 3, 8, 8, 3, 2, 3


def dreamer_program(torch, nn, F):
    """A namespace of networks.py's ``RSSM``, ``GRUCell``, ``DenseHead`` and ``ActionHead`` (its 'onehot' head), tools.py's
    ``OneHotDist``, ``ContDist``, ``static_scan``, ``static_scan_for_lambda_return``, ``lambda_return``, ``Optimizer``
    and ``RequiresGrad``, and models.py's ``WorldModel`` and ``ImagBehavior``, as written (two-space indents made four;
    an MLP encoder of vector observations in place of the ConvEncoder, an 'obs' head in place of the ConvDecoder)."""
    torchd = torch.distributions

    # tools.py
    class RequiresGrad:
        def __init__(self, model):
            self._model = model

        def __enter__(self):
            self._model.requires_grad_(requires_grad=True)

        def __exit__(self, *args):
            self._model.requires_grad_(requires_grad=False)

    class OneHotDist(torchd.one_hot_categorical.OneHotCategorical):
        def __init__(self, logits=None, probs=None):
            super().__init__(logits=logits, probs=probs)

        def mode(self):
            _mode = F.one_hot(torch.argmax(super().logits, axis=-1), super().logits.shape[-1])
            return _mode.detach() + super().logits - super().logits.detach()

        def sample(self, sample_shape=(), seed=None):
            if seed is not None:
                raise ValueError('need to check')
            sample = super().sample(sample_shape)
            probs = super().probs
            while len(probs.shape) < len(sample.shape):
                probs = probs[None]
            sample += probs - probs.detach()
            return sample

    class ContDist:
        def __init__(self, dist=None):
            super().__init__()
            self._dist = dist
            self.mean = dist.mean

        def __getattr__(self, name):
            return getattr(self._dist, name)

        def entropy(self):
            return self._dist.entropy()

        def mode(self):
            return self._dist.mean

        def sample(self, sample_shape=()):
            return self._dist.rsample(sample_shape)

        def log_prob(self, x):
            return self._dist.log_prob(x)

    def static_scan(fn, inputs, start):
        last = start
        indices = range(inputs[0].shape[0])
        flag = True
        for index in indices:
            inp = lambda x: (_input[x] for _input in inputs)  # noqa: E731
            last = fn(last, *inp(index))
            if flag:
                if type(last) == type({}):  # noqa: E721
                    outputs = {key: value.clone().unsqueeze(0) for key, value in last.items()}
                else:
                    outputs = []
                    for _last in last:
                        if type(_last) == type({}):  # noqa: E721
                            outputs.append({key: value.clone().unsqueeze(0) for key, value in _last.items()})
                        else:
                            outputs.append(_last.clone().unsqueeze(0))
                flag = False
            else:
                if type(last) == type({}):  # noqa: E721
                    for key in last.keys():
                        outputs[key] = torch.cat([outputs[key], last[key].unsqueeze(0)], dim=0)
                else:
                    for j in range(len(outputs)):
                        if type(last[j]) == type({}):  # noqa: E721
                            for key in last[j].keys():
                                outputs[j][key] = torch.cat([outputs[j][key], last[j][key].unsqueeze(0)], dim=0)
                        else:
                            outputs[j] = torch.cat([outputs[j], last[j].unsqueeze(0)], dim=0)
        if type(last) == type({}):  # noqa: E721
            outputs = [outputs]
        return outputs

    def static_scan_for_lambda_return(fn, inputs, start):
        last = start
        indices = range(inputs[0].shape[0])
        indices = reversed(indices)
        flag = True
        for index in indices:
            inp = lambda x: (_input[x] for _input in inputs)  # noqa: E731
            last = fn(last, *inp(index))
            if flag:
                outputs = last
                flag = False
            else:
                outputs = torch.cat([outputs, last], dim=-1)
        outputs = torch.reshape(outputs, [outputs.shape[0], outputs.shape[1], 1])
        outputs = torch.unbind(outputs, dim=0)
        return outputs

    def lambda_return(reward, value, pcont, bootstrap, lambda_, axis):
        assert len(reward.shape) == len(value.shape), (reward.shape, value.shape)
        if isinstance(pcont, (int, float)):
            pcont = pcont * torch.ones_like(reward)
        dims = list(range(len(reward.shape)))
        dims = [axis] + dims[1:axis] + [0] + dims[axis + 1:]
        if axis != 0:
            reward = reward.permute(dims)
            value = value.permute(dims)
            pcont = pcont.permute(dims)
        if bootstrap is None:
            bootstrap = torch.zeros_like(value[-1])
        next_values = torch.cat([value[1:], bootstrap[None]], 0)
        inputs = reward + pcont * next_values * (1 - lambda_)
        returns = static_scan_for_lambda_return(
            lambda agg, cur0, cur1: cur0 + cur1 * lambda_ * agg,
            (inputs, pcont), bootstrap)
        if axis != 0:
            returns = returns.permute(dims)
        return returns

    class Optimizer():
        def __init__(self, name, parameters, lr, eps=1e-4, clip=None, wd=None, wd_pattern=r'.*', opt='adam',
                     use_amp=False):
            assert 0 <= wd < 1
            assert not clip or 1 <= clip
            self._name = name
            self._parameters = parameters
            self._clip = clip
            self._wd = wd
            self._wd_pattern = wd_pattern
            self._opt = {
                'adam': lambda: torch.optim.Adam(parameters, lr=lr, eps=eps),
                'sgd': lambda: torch.optim.SGD(parameters, lr=lr),
            }[opt]()
            self._scaler = torch.cuda.amp.GradScaler(enabled=use_amp)

        def __call__(self, loss, params, retain_graph=False):
            assert len(loss.shape) == 0, loss.shape
            metrics = {}
            metrics[f'{self._name}_loss'] = loss.detach().cpu().numpy()
            self._scaler.scale(loss).backward()
            self._scaler.unscale_(self._opt)
            norm = torch.nn.utils.clip_grad_norm_(params, self._clip)
            self._scaler.step(self._opt)
            self._scaler.update()
            self._opt.zero_grad()
            metrics[f'{self._name}_grad_norm'] = norm.item()
            return metrics

    # networks.py
    class GRUCell(nn.Module):
        def __init__(self, inp_size, size, norm=False, act=torch.tanh, update_bias=-1):
            super(GRUCell, self).__init__()
            self._inp_size = inp_size
            self._size = size
            self._act = act
            self._norm = norm
            self._update_bias = update_bias
            self._layer = nn.Linear(inp_size + size, 3 * size, bias=norm is not None)
            if norm:
                self._norm = nn.LayerNorm(3 * size)

        @property
        def state_size(self):
            return self._size

        def forward(self, inputs, state):
            state = state[0]  # Keras wraps the state in a list.
            parts = self._layer(torch.cat([inputs, state], -1))
            if self._norm:
                parts = self._norm(parts)
            reset, cand, update = torch.split(parts, [self._size] * 3, -1)
            reset = torch.sigmoid(reset)
            cand = self._act(reset * cand)
            update = torch.sigmoid(update + self._update_bias)
            output = update * cand + (1 - update) * state
            return output, [output]

    class RSSM(nn.Module):
        def __init__(self, stoch=30, deter=200, hidden=200, layers_input=1, layers_output=1, rec_depth=1,
                     shared=False, discrete=False, act=nn.ELU, mean_act='none', std_act='softplus', temp_post=True,
                     min_std=0.1, cell='gru', num_actions=None, embed=None, device=None):
            super(RSSM, self).__init__()
            self._stoch = stoch
            self._deter = deter
            self._hidden = hidden
            self._min_std = min_std
            self._layers_input = layers_input
            self._layers_output = layers_output
            self._rec_depth = rec_depth
            self._shared = shared
            self._discrete = discrete
            self._act = act
            self._mean_act = mean_act
            self._std_act = std_act
            self._temp_post = temp_post
            self._embed = embed
            self._device = device
            inp_layers = []
            if self._discrete:
                inp_dim = self._stoch * self._discrete + num_actions
            else:
                inp_dim = self._stoch + num_actions
            for i in range(self._layers_input):
                inp_layers.append(nn.Linear(inp_dim, self._hidden))
                inp_layers.append(self._act())
                if i == 0:
                    inp_dim = self._hidden
            self._inp_layers = nn.Sequential(*inp_layers)
            if cell == 'gru':
                self._cell = nn.GRUCell(self._hidden, self._deter)
            elif cell == 'gru_layer_norm':
                self._cell = GRUCell(self._hidden, self._deter, norm=True)
            else:
                raise NotImplementedError(cell)
            img_out_layers = []
            inp_dim = self._deter
            for i in range(self._layers_output):
                img_out_layers.append(nn.Linear(inp_dim, self._hidden))
                img_out_layers.append(self._act())
                if i == 0:
                    inp_dim = self._hidden
            self._img_out_layers = nn.Sequential(*img_out_layers)
            obs_out_layers = []
            inp_dim = self._deter + self._embed if self._temp_post else self._embed
            for i in range(self._layers_output):
                obs_out_layers.append(nn.Linear(inp_dim, self._hidden))
                obs_out_layers.append(self._act())
                if i == 0:
                    inp_dim = self._hidden
            self._obs_out_layers = nn.Sequential(*obs_out_layers)
            if self._discrete:
                self._ims_stat_layer = nn.Linear(self._hidden, self._stoch * self._discrete)
                self._obs_stat_layer = nn.Linear(self._hidden, self._stoch * self._discrete)
            else:
                self._ims_stat_layer = nn.Linear(self._hidden, 2 * self._stoch)
                self._obs_stat_layer = nn.Linear(self._hidden, 2 * self._stoch)

        def initial(self, batch_size):
            deter = torch.zeros(batch_size, self._deter).to(self._device)
            if self._discrete:
                state = dict(
                    logit=torch.zeros([batch_size, self._stoch, self._discrete]).to(self._device),
                    stoch=torch.zeros([batch_size, self._stoch, self._discrete]).to(self._device),
                    deter=deter)
            else:
                state = dict(
                    mean=torch.zeros([batch_size, self._stoch]).to(self._device),
                    std=torch.zeros([batch_size, self._stoch]).to(self._device),
                    stoch=torch.zeros([batch_size, self._stoch]).to(self._device),
                    deter=deter)
            return state

        def observe(self, embed, action, state=None):
            swap = lambda x: x.permute([1, 0] + list(range(2, len(x.shape))))  # noqa: E731
            if state is None:
                state = self.initial(action.shape[0])
            embed, action = swap(embed), swap(action)
            post, prior = static_scan(
                lambda prev_state, prev_act, embed: self.obs_step(prev_state[0], prev_act, embed),
                (action, embed), (state, state))
            post = {k: swap(v) for k, v in post.items()}
            prior = {k: swap(v) for k, v in prior.items()}
            return post, prior

        def imagine(self, action, state=None):
            swap = lambda x: x.permute([1, 0] + list(range(2, len(x.shape))))  # noqa: E731
            if state is None:
                state = self.initial(action.shape[0])
            assert isinstance(state, dict), state
            action = swap(action)
            prior = static_scan(self.img_step, [action], state)
            prior = prior[0]
            prior = {k: swap(v) for k, v in prior.items()}
            return prior

        def get_feat(self, state):
            stoch = state['stoch']
            if self._discrete:
                shape = list(stoch.shape[:-2]) + [self._stoch * self._discrete]
                stoch = stoch.reshape(shape)
            return torch.cat([stoch, state['deter']], -1)

        def get_dist(self, state, dtype=None):
            if self._discrete:
                logit = state['logit']
                dist = torchd.independent.Independent(OneHotDist(logit), 1)
            else:
                mean, std = state['mean'], state['std']
                dist = ContDist(torchd.independent.Independent(torchd.normal.Normal(mean, std), 1))
            return dist

        def obs_step(self, prev_state, prev_action, embed, sample=True):
            prior = self.img_step(prev_state, prev_action, None, sample)
            if self._temp_post:
                x = torch.cat([prior['deter'], embed], -1)
            else:
                x = embed
            x = self._obs_out_layers(x)
            stats = self._suff_stats_layer('obs', x)
            if sample:
                stoch = self.get_dist(stats).sample()
            else:
                stoch = self.get_dist(stats).mode()
            post = {'stoch': stoch, 'deter': prior['deter'], **stats}
            return post, prior

        def img_step(self, prev_state, prev_action, embed=None, sample=True):
            prev_stoch = prev_state['stoch']
            if self._discrete:
                shape = list(prev_stoch.shape[:-2]) + [self._stoch * self._discrete]
                prev_stoch = prev_stoch.reshape(shape)
            x = torch.cat([prev_stoch, prev_action], -1)
            x = self._inp_layers(x)
            for _ in range(self._rec_depth):  # rec depth is not correctly implemented
                deter = prev_state['deter']
                x, deter = self._cell(x, [deter])
                deter = deter[0]  # Keras wraps the state in a list.
            x = self._img_out_layers(x)
            stats = self._suff_stats_layer('ims', x)
            if sample:
                stoch = self.get_dist(stats).sample()
            else:
                stoch = self.get_dist(stats).mode()
            prior = {'stoch': stoch, 'deter': deter, **stats}
            return prior

        def _suff_stats_layer(self, name, x):
            if self._discrete:
                if name == 'ims':
                    x = self._ims_stat_layer(x)
                elif name == 'obs':
                    x = self._obs_stat_layer(x)
                else:
                    raise NotImplementedError
                logit = x.reshape(list(x.shape[:-1]) + [self._stoch, self._discrete])
                return {'logit': logit}
            else:
                if name == 'ims':
                    x = self._ims_stat_layer(x)
                elif name == 'obs':
                    x = self._obs_stat_layer(x)
                else:
                    raise NotImplementedError
                mean, std = torch.split(x, [self._stoch] * 2, -1)
                mean = {
                    'none': lambda: mean,
                    'tanh5': lambda: 5.0 * torch.tanh(mean / 5.0),
                }[self._mean_act]()
                std = {
                    'abs': lambda: torch.abs(std + 1),
                    'sigmoid': lambda: torch.sigmoid(std),
                    'sigmoid2': lambda: 2 * torch.sigmoid(std / 2),
                }[self._std_act]()
                std = std + self._min_std
                return {'mean': mean, 'std': std}

        def kl_loss(self, post, prior, forward, balance, free, scale):
            kld = torchd.kl.kl_divergence
            dist = lambda x: self.get_dist(x)  # noqa: E731
            sg = lambda x: {k: v.detach() for k, v in x.items()}  # noqa: E731
            lhs, rhs = (prior, post) if forward else (post, prior)
            mix = balance if forward else (1 - balance)
            if balance == 0.5:
                value = kld(dist(lhs) if self._discrete else dist(lhs)._dist,
                            dist(rhs) if self._discrete else dist(rhs)._dist)
                loss = torch.mean(torch.maximum(value, free))
            else:
                value_lhs = value = kld(dist(lhs) if self._discrete else dist(lhs)._dist,
                                        dist(sg(rhs)) if self._discrete else dist(sg(rhs))._dist)
                value_rhs = kld(dist(sg(lhs)) if self._discrete else dist(sg(lhs))._dist,
                                dist(rhs) if self._discrete else dist(rhs)._dist)
                loss_lhs = torch.maximum(torch.mean(value_lhs), torch.Tensor([free])[0])
                loss_rhs = torch.maximum(torch.mean(value_rhs), torch.Tensor([free])[0])
                loss = mix * loss_lhs + (1 - mix) * loss_rhs
            loss *= scale
            return loss, value

    class DenseHead(nn.Module):
        def __init__(self, inp_dim, shape, layers, units, act=nn.ELU, dist='normal', std=1.0):
            super(DenseHead, self).__init__()
            self._shape = (shape,) if isinstance(shape, int) else shape
            if len(self._shape) == 0:
                self._shape = (1,)
            self._layers = layers
            self._units = units
            self._act = act
            self._dist = dist
            self._std = std
            mean_layers = []
            for index in range(self._layers):
                mean_layers.append(nn.Linear(inp_dim, self._units))
                mean_layers.append(act())
                if index == 0:
                    inp_dim = self._units
            mean_layers.append(nn.Linear(inp_dim, np.prod(self._shape)))
            self._mean_layers = nn.Sequential(*mean_layers)

        def __call__(self, features, dtype=None):
            x = features
            mean = self._mean_layers(x)
            std = self._std
            if self._dist == 'normal':
                return ContDist(torchd.independent.Independent(torchd.normal.Normal(mean, std), len(self._shape)))
            raise NotImplementedError(self._dist)

    class ActionHead(nn.Module):
        def __init__(self, inp_dim, size, layers, units, act=nn.ELU, dist='trunc_normal', init_std=0.0, min_std=0.1,
                     action_disc=5, temp=0.1, outscale=0):
            super(ActionHead, self).__init__()
            self._size = size
            self._layers = layers
            self._units = units
            self._dist = dist
            self._act = act
            self._min_std = min_std
            self._init_std = init_std
            self._action_disc = action_disc
            self._temp = temp() if callable(temp) else temp
            self._outscale = outscale
            pre_layers = []
            for index in range(self._layers):
                pre_layers.append(nn.Linear(inp_dim, self._units))
                pre_layers.append(act())
                if index == 0:
                    inp_dim = self._units
            self._pre_layers = nn.Sequential(*pre_layers)
            if self._dist in ['normal_1', 'onehot', 'onehot_gumbel']:
                self._dist_layer = nn.Linear(self._units, self._size)

        def __call__(self, features, dtype=None):
            x = features
            x = self._pre_layers(x)
            if self._dist == 'onehot':
                x = self._dist_layer(x)
                dist = OneHotDist(x)
            else:
                raise NotImplementedError(self._dist)
            return dist

    # models.py
    class WorldModel(nn.Module):
        def __init__(self, step, config):
            super(WorldModel, self).__init__()
            self._step = step
            self._use_amp = True if config.precision == 16 else False
            self._config = config
            self.encoder = nn.Sequential(nn.Linear(OBS, EMBED), config.act())  # vector observations
            embed_size = EMBED
            self.dynamics = RSSM(
                config.dyn_stoch, config.dyn_deter, config.dyn_hidden, config.dyn_input_layers,
                config.dyn_output_layers, config.dyn_rec_depth, config.dyn_shared, config.dyn_discrete, config.act,
                config.dyn_mean_act, config.dyn_std_act, config.dyn_temp_post, config.dyn_min_std, config.dyn_cell,
                config.num_actions, embed_size, config.device)
            self.heads = nn.ModuleDict()
            if config.dyn_discrete:
                feat_size = config.dyn_stoch * config.dyn_discrete + config.dyn_deter
            else:
                feat_size = config.dyn_stoch + config.dyn_deter
            self.heads['obs'] = DenseHead(feat_size, (OBS,), config.reward_layers, config.units, config.act)
            self.heads['reward'] = DenseHead(feat_size, [], config.reward_layers, config.units, config.act)
            for name in config.grad_heads:
                assert name in self.heads, name
            self._model_opt = Optimizer(
                'model', self.parameters(), config.model_lr, config.opt_eps, config.grad_clip, config.weight_decay,
                opt=config.opt, use_amp=self._use_amp)
            self._scales = dict(reward=config.reward_scale, discount=config.discount_scale)

        def _losses(self, data):
            """The start of the reference's ``_train`` (under ``RequiresGrad``), to the model loss."""
            embed = self.encoder(data['obs'])
            post, prior = self.dynamics.observe(embed, data['action'])
            kl_loss, kl_value = self.dynamics.kl_loss(
                post, prior, self._config.kl_forward, self._config.kl_balance, self._config.kl_free,
                self._config.kl_scale)
            losses = {}
            likes = {}
            for name, head in self.heads.items():
                grad_head = (name in self._config.grad_heads)
                feat = self.dynamics.get_feat(post)
                feat = feat if grad_head else feat.detach()
                pred = head(feat)
                like = pred.log_prob(data[name])
                likes[name] = like
                losses[name] = -torch.mean(like) * self._scales.get(name, 1.0)
            model_loss = sum(losses.values()) + kl_loss
            return model_loss, post, prior, kl_value, losses

        def _train(self, data):
            data = self.preprocess(data)
            with RequiresGrad(self):
                with torch.cuda.amp.autocast(self._use_amp):
                    model_loss, post, prior, kl_value, losses = self._losses(data)
                metrics = self._model_opt(model_loss, self.parameters())
            metrics.update({f'{name}_loss': loss.detach().cpu().numpy() for name, loss in losses.items()})
            metrics['kl'] = torch.mean(kl_value).detach().cpu().numpy()
            metrics['prior_ent'] = torch.mean(self.dynamics.get_dist(prior).entropy()).detach().cpu().numpy()
            metrics['post_ent'] = torch.mean(self.dynamics.get_dist(post).entropy()).detach().cpu().numpy()
            post = {k: v.detach() for k, v in post.items()}
            return post, metrics

        def preprocess(self, obs):
            obs = obs.copy()
            obs['reward'] = torch.Tensor(obs['reward']).unsqueeze(-1)  # clip_rewards 'identity'
            obs = {k: torch.Tensor(v).to(self._config.device) for k, v in obs.items()}
            return obs

    class ImagBehavior(nn.Module):
        def __init__(self, config, world_model, stop_grad_actor=True, reward=None):
            super(ImagBehavior, self).__init__()
            self._use_amp = True if config.precision == 16 else False
            self._config = config
            self._world_model = world_model
            self._stop_grad_actor = stop_grad_actor
            self._reward = reward
            if config.dyn_discrete:
                feat_size = config.dyn_stoch * config.dyn_discrete + config.dyn_deter
            else:
                feat_size = config.dyn_stoch + config.dyn_deter
            self.actor = ActionHead(
                feat_size, config.num_actions, config.actor_layers, config.units, config.act, config.actor_dist,
                config.actor_init_std, config.actor_min_std, config.actor_dist, config.actor_temp,
                config.actor_outscale)
            self.value = DenseHead(feat_size, [], config.value_layers, config.units, config.act, config.value_head)
            if config.slow_value_target or config.slow_actor_target:
                self._slow_value = DenseHead(feat_size, [], config.value_layers, config.units, config.act)
                self._updates = 0
            kw = dict(wd=config.weight_decay, opt=config.opt, use_amp=self._use_amp)
            self._actor_opt = Optimizer(
                'actor', self.actor.parameters(), config.actor_lr, config.opt_eps, config.actor_grad_clip, **kw)
            self._value_opt = Optimizer(
                'value', self.value.parameters(), config.value_lr, config.opt_eps, config.value_grad_clip, **kw)

        def _train(self, start, objective=None, action=None, reward=None, imagine=None, tape=None, repeats=None):
            config = self._config
            objective = objective or self._reward
            self._update_slow_target()
            metrics = {}
            with RequiresGrad(self.actor):
                with torch.cuda.amp.autocast(self._use_amp):
                    imag_feat, imag_state, imag_action = self._imagine(
                        start, self.actor, self._config.imag_horizon, repeats)
                    reward = objective(imag_feat, imag_state, imag_action)
                    actor_ent = self.actor(imag_feat).entropy()
                    state_ent = self._world_model.dynamics.get_dist(imag_state).entropy()
                    target, weights = self._compute_target(
                        imag_feat, imag_state, imag_action, reward, actor_ent, state_ent,
                        self._config.slow_actor_target)
                    actor_loss, mets = self._compute_actor_loss(
                        imag_feat, imag_state, imag_action, target, actor_ent, state_ent, weights)
                    metrics.update(mets)
                    value_input = imag_feat
                if config.step_while_unfrozen:
                    metrics.update(self._actor_opt(actor_loss, self.actor.parameters()))
            with RequiresGrad(self.value):
                with torch.cuda.amp.autocast(self._use_amp):
                    value = self.value(value_input[:-1].detach())
                    target = torch.stack(target, dim=1)
                    value_loss = -value.log_prob(target.detach())
                    value_loss = torch.mean(weights[:-1] * value_loss[:, :, None])
                if config.step_while_unfrozen:
                    metrics.update(self._value_opt(value_loss, self.value.parameters()))
            metrics['reward_mean'] = torch.mean(reward).detach().cpu().numpy()
            metrics['reward_std'] = torch.std(reward).detach().cpu().numpy()
            metrics['actor_ent'] = torch.mean(actor_ent).detach().cpu().numpy()
            metrics['target'] = target.detach().cpu().numpy()
            if not config.step_while_unfrozen:  # as written: the actor and value are frozen again by now
                metrics.update(self._actor_opt(actor_loss, self.actor.parameters()))
                metrics.update(self._value_opt(value_loss, self.value.parameters()))
            return imag_feat, imag_state, imag_action, weights, metrics

        def _imagine(self, start, policy, horizon, repeats=None):
            dynamics = self._world_model.dynamics
            flatten = lambda x: x.reshape([-1] + list(x.shape[2:]))  # noqa: E731
            start = {k: flatten(v) for k, v in start.items()}

            def step(prev, _):
                state, _, _ = prev
                feat = dynamics.get_feat(state)
                inp = feat.detach() if self._stop_grad_actor else feat
                action = policy(inp).sample()
                succ = dynamics.img_step(state, action, sample=self._config.imag_sample)
                return succ, feat, action

            feat = 0 * dynamics.get_feat(start)
            action = policy(feat).mode()
            succ, feats, actions = static_scan(step, [torch.arange(horizon)], (start, feat, action))
            states = {k: torch.cat([start[k][None], v[:-1]], 0) for k, v in succ.items()}
            return feats, states, actions

        def _compute_target(self, imag_feat, imag_state, imag_action, reward, actor_ent, state_ent, slow):
            discount = self._config.discount * torch.ones_like(reward)
            if slow:
                value = self._slow_value(imag_feat).mode()
            else:
                value = self.value(imag_feat).mode()
            target = lambda_return(
                reward[:-1], value[:-1], discount[:-1], bootstrap=value[-1], lambda_=self._config.discount_lambda,
                axis=0)
            weights = torch.cumprod(torch.cat([torch.ones_like(discount[:1]), discount[:-1]], 0), 0).detach()
            return target, weights

        def _compute_actor_loss(self, imag_feat, imag_state, imag_action, target, actor_ent, state_ent, weights):
            metrics = {}
            inp = imag_feat.detach() if self._stop_grad_actor else imag_feat
            policy = self.actor(inp)
            actor_ent = policy.entropy()
            target = torch.stack(target, dim=1)
            if self._config.imag_gradient == 'dynamics':
                actor_target = target
            elif self._config.imag_gradient == 'both':
                actor_target = policy.log_prob(imag_action)[:-1][:, :, None] * (
                    target - self.value(imag_feat[:-1]).mode()).detach()
                mix = self._config.imag_gradient_mix()
                actor_target = mix * target + (1 - mix) * actor_target
                metrics['imag_gradient_mix'] = mix
            else:
                raise NotImplementedError(self._config.imag_gradient)
            if self._config.actor_entropy() > 0:
                actor_target += self._config.actor_entropy() * actor_ent[:-1][:, :, None]
            actor_loss = -torch.mean(weights[:-1] * actor_target)
            return actor_loss, metrics

        def _update_slow_target(self):
            if self._config.slow_value_target or self._config.slow_actor_target:
                if self._updates % self._config.slow_target_update == 0:
                    mix = self._config.slow_target_fraction
                    for s, d in zip(self.value.parameters(), self._slow_value.parameters()):
                        d.data = mix * s.data + (1 - mix) * d.data
                self._updates += 1

    return dict(WorldModel=WorldModel, ImagBehavior=ImagBehavior, RequiresGrad=RequiresGrad)
