"""MuZero as werner-duvaud/muzero-general writes it: ``models.py``'s fully connected network (representation,
dynamics, prediction; ``mlp``), ``support_to_scalar``/``scalar_to_support``, and ``trainer.py``'s ``update_weights``,
``update_lr`` and ``loss_function``, with the paper pseudocode's ``scale_gradient``; written once for ``torch`` being
torch or kiln: the program of ``test_porting_probes_muzero.py``, whose docstring says what it covers."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from types import SimpleNamespace

import numpy


def muzero_config(**overrides):
    """The ``MuZeroConfig`` fields the network and trainer read (cartpole's, smaller)."""
    config = SimpleNamespace(
        observation_shape=(1, 1, 4), stacked_observations=0, action_space=list(range(3)),
        network="fullyconnected", support_size=10, encoding_size=5, fc_representation_layers=[8],
        fc_dynamics_layers=[8], fc_reward_layers=[8], fc_value_layers=[8], fc_policy_layers=[8],
        num_unroll_steps=3, value_loss_weight=0.25, PER=True, PER_alpha=0.5,
        optimizer="Adam", weight_decay=1e-4, momentum=0.9, lr_init=0.02, lr_decay_rate=0.8, lr_decay_steps=2,
        scale_hidden_gradient="register_hook", seed=0)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def muzero_models(torch):
    """models.py: ``MuZeroNetwork`` (the fully connected variant), ``mlp``, ``support_to_scalar``,
    ``scalar_to_support``, and the min-max ``normalize_encoded_state`` the network applies to each hidden state."""

    class MuZeroNetwork:
        def __new__(cls, config):
            if config.network == "fullyconnected":
                return MuZeroFullyConnectedNetwork(
                    config.observation_shape,
                    config.stacked_observations,
                    len(config.action_space),
                    config.encoding_size,
                    config.fc_reward_layers,
                    config.fc_value_layers,
                    config.fc_policy_layers,
                    config.fc_representation_layers,
                    config.fc_dynamics_layers,
                    config.support_size,
                )
            else:
                raise NotImplementedError(
                    'The network parameter should be "fullyconnected" or "resnet".'
                )

    def dict_to_cpu(dictionary):
        cpu_dict = {}
        for key, value in dictionary.items():
            if isinstance(value, torch.Tensor):
                cpu_dict[key] = value.cpu()
            elif isinstance(value, dict):
                cpu_dict[key] = dict_to_cpu(value)
            else:
                cpu_dict[key] = value
        return cpu_dict

    class AbstractNetwork(ABC, torch.nn.Module):
        def __init__(self):
            super().__init__()
            pass

        @abstractmethod
        def initial_inference(self, observation):
            pass

        @abstractmethod
        def recurrent_inference(self, encoded_state, action):
            pass

        def get_weights(self):
            return dict_to_cpu(self.state_dict())

        def set_weights(self, weights):
            self.load_state_dict(weights)

    def normalize_encoded_state(encoded_state):
        # Scale encoded state between [0, 1] (See appendix paper Training)
        min_encoded_state = encoded_state.min(1, keepdim=True)[0]
        max_encoded_state = encoded_state.max(1, keepdim=True)[0]
        scale_encoded_state = max_encoded_state - min_encoded_state
        scale_encoded_state[scale_encoded_state < 1e-5] += 1e-5
        encoded_state_normalized = (
            encoded_state - min_encoded_state
        ) / scale_encoded_state
        return encoded_state_normalized

    class MuZeroFullyConnectedNetwork(AbstractNetwork):
        def __init__(
            self,
            observation_shape,
            stacked_observations,
            action_space_size,
            encoding_size,
            fc_reward_layers,
            fc_value_layers,
            fc_policy_layers,
            fc_representation_layers,
            fc_dynamics_layers,
            support_size,
        ):
            super().__init__()
            self.action_space_size = action_space_size
            self.full_support_size = 2 * support_size + 1

            self.representation_network = torch.nn.DataParallel(
                mlp(
                    observation_shape[0]
                    * observation_shape[1]
                    * observation_shape[2]
                    * (stacked_observations + 1)
                    + stacked_observations * observation_shape[1] * observation_shape[2],
                    fc_representation_layers,
                    encoding_size,
                )
            )

            self.dynamics_encoded_state_network = torch.nn.DataParallel(
                mlp(
                    encoding_size + self.action_space_size,
                    fc_dynamics_layers,
                    encoding_size,
                )
            )
            self.dynamics_reward_network = torch.nn.DataParallel(
                mlp(encoding_size, fc_reward_layers, self.full_support_size)
            )

            self.prediction_policy_network = torch.nn.DataParallel(
                mlp(encoding_size, fc_policy_layers, self.action_space_size)
            )
            self.prediction_value_network = torch.nn.DataParallel(
                mlp(encoding_size, fc_value_layers, self.full_support_size)
            )

        def prediction(self, encoded_state):
            policy_logits = self.prediction_policy_network(encoded_state)
            value = self.prediction_value_network(encoded_state)
            return policy_logits, value

        def representation(self, observation):
            encoded_state = self.representation_network(
                observation.view(observation.shape[0], -1)
            )
            return normalize_encoded_state(encoded_state)

        def dynamics(self, encoded_state, action):
            # Stack encoded_state with a game specific one hot encoded action (See paper appendix Network Architecture)
            action_one_hot = (
                torch.zeros((action.shape[0], self.action_space_size))
                .to(action.device)
                .float()
            )
            action_one_hot.scatter_(1, action.long(), 1.0)
            x = torch.cat((encoded_state, action_one_hot), dim=1)

            next_encoded_state = self.dynamics_encoded_state_network(x)

            reward = self.dynamics_reward_network(next_encoded_state)

            # Scale encoded state between [0, 1] (See paper appendix Training)
            next_encoded_state_normalized = normalize_encoded_state(next_encoded_state)

            return next_encoded_state_normalized, reward

        def initial_inference(self, observation):
            encoded_state = self.representation(observation)
            policy_logits, value = self.prediction(encoded_state)
            # reward equal to 0 for consistency
            reward = torch.log(
                (
                    torch.zeros(1, self.full_support_size)
                    .scatter(1, torch.tensor([[self.full_support_size // 2]]).long(), 1.0)
                    .repeat(len(observation), 1)
                    .to(observation.device)
                )
            )

            return (
                value,
                reward,
                policy_logits,
                encoded_state,
            )

        def recurrent_inference(self, encoded_state, action):
            next_encoded_state, reward = self.dynamics(encoded_state, action)
            policy_logits, value = self.prediction(next_encoded_state)
            return value, reward, policy_logits, next_encoded_state

    def mlp(
        input_size,
        layer_sizes,
        output_size,
        output_activation=torch.nn.Identity,
        activation=torch.nn.ELU,
    ):
        sizes = [input_size] + layer_sizes + [output_size]
        layers = []
        for i in range(len(sizes) - 1):
            act = activation if i < len(sizes) - 2 else output_activation
            layers += [torch.nn.Linear(sizes[i], sizes[i + 1]), act()]
        return torch.nn.Sequential(*layers)

    def support_to_scalar(logits, support_size):
        """
        Transform a categorical representation to a scalar
        See paper appendix Network Architecture
        """
        # Decode to a scalar
        probabilities = torch.softmax(logits, dim=1)
        support = (
            torch.tensor([x for x in range(-support_size, support_size + 1)])
            .expand(probabilities.shape)
            .float()
            .to(device=probabilities.device)
        )
        x = torch.sum(support * probabilities, dim=1, keepdim=True)

        # Invert the scaling (defined in https://arxiv.org/abs/1805.11593)
        x = torch.sign(x) * (
            ((torch.sqrt(1 + 4 * 0.001 * (torch.abs(x) + 1 + 0.001)) - 1) / (2 * 0.001))
            ** 2
            - 1
        )
        return x

    def scalar_to_support(x, support_size):
        """
        Transform a scalar to a categorical representation with (2 * support_size + 1) categories
        See paper appendix Network Architecture
        """
        # Reduce the scale (defined in https://arxiv.org/abs/1805.11593)
        x = torch.sign(x) * (torch.sqrt(torch.abs(x) + 1) - 1) + 0.001 * x

        # Encode on a vector
        x = torch.clamp(x, -support_size, support_size)
        floor = x.floor()
        prob = x - floor
        logits = torch.zeros(x.shape[0], x.shape[1], 2 * support_size + 1).to(x.device)
        logits.scatter_(
            2, (floor + support_size).long().unsqueeze(-1), (1 - prob).unsqueeze(-1)
        )
        indexes = floor + support_size + 1
        prob = prob.masked_fill_(2 * support_size < indexes, 0.0)
        indexes = indexes.masked_fill_(2 * support_size < indexes, 0.0)
        logits.scatter_(2, indexes.long().unsqueeze(-1), prob.unsqueeze(-1))
        return logits

    return SimpleNamespace(MuZeroNetwork=MuZeroNetwork, support_to_scalar=support_to_scalar,
                           scalar_to_support=scalar_to_support, normalize_encoded_state=normalize_encoded_state)


def scale_gradient(tensor, scale):
    """The paper pseudocode's ``scale_gradient``: scales the gradient for the backward pass."""
    return tensor * scale + tensor.detach() * (1 - scale)


def muzero_trainer(torch):
    """trainer.py's ``Trainer``: the optimizer from the config, ``update_weights``, ``update_lr`` and
    ``loss_function`` (the replay buffer, shared storage and Ray plumbing of ``continuous_update_weights`` left
    out)."""
    models = muzero_models(torch)

    class Trainer:
        def __init__(self, initial_checkpoint, config):
            self.config = config

            # Fix random generator seed
            numpy.random.seed(self.config.seed)
            torch.manual_seed(self.config.seed)

            # Initialize the network
            self.model = models.MuZeroNetwork(self.config)
            self.model.set_weights(copy.deepcopy(initial_checkpoint["weights"]))
            self.model.to(torch.device("cpu"))
            self.model.train()

            self.training_step = initial_checkpoint["training_step"]

            if self.config.optimizer == "SGD":
                self.optimizer = torch.optim.SGD(
                    self.model.parameters(),
                    lr=self.config.lr_init,
                    momentum=self.config.momentum,
                    weight_decay=self.config.weight_decay,
                )
            elif self.config.optimizer == "Adam":
                self.optimizer = torch.optim.Adam(
                    self.model.parameters(),
                    lr=self.config.lr_init,
                    weight_decay=self.config.weight_decay,
                )
            else:
                raise NotImplementedError(
                    f"{self.config.optimizer} is not implemented. You can change the optimizer manually in trainer.py."
                )

        def update_weights(self, batch):
            """
            Perform one training step.
            """

            (
                observation_batch,
                action_batch,
                target_value,
                target_reward,
                target_policy,
                weight_batch,
                gradient_scale_batch,
            ) = batch

            # Keep values as scalars for calculating the priorities for the prioritized replay
            target_value_scalar = numpy.array(target_value, dtype="float32")
            priorities = numpy.zeros_like(target_value_scalar)

            device = next(self.model.parameters()).device
            dtype = next(self.model.parameters()).dtype  # the authors' ``.float()``: the model's dtype (see the probe)
            if self.config.PER:
                weight_batch = torch.tensor(weight_batch.copy()).to(dtype).to(device)
            observation_batch = (
                torch.tensor(numpy.array(observation_batch)).to(dtype).to(device)
            )
            action_batch = torch.tensor(action_batch).long().to(device).unsqueeze(-1)
            target_value = torch.tensor(target_value).to(dtype).to(device)
            target_reward = torch.tensor(target_reward).to(dtype).to(device)
            target_policy = torch.tensor(target_policy).to(dtype).to(device)
            gradient_scale_batch = torch.tensor(gradient_scale_batch).to(dtype).to(device)
            # observation_batch: batch, channels, height, width
            # action_batch: batch, num_unroll_steps+1, 1 (unsqueeze)
            # target_value: batch, num_unroll_steps+1
            # target_reward: batch, num_unroll_steps+1
            # target_policy: batch, num_unroll_steps+1, len(action_space)
            # gradient_scale_batch: batch, num_unroll_steps+1

            target_value = models.scalar_to_support(target_value, self.config.support_size)
            target_reward = models.scalar_to_support(
                target_reward, self.config.support_size
            )
            # target_value: batch, num_unroll_steps+1, 2*support_size+1
            # target_reward: batch, num_unroll_steps+1, 2*support_size+1

            ## Generate predictions
            value, reward, policy_logits, hidden_state = self.model.initial_inference(
                observation_batch
            )
            predictions = [(value, reward, policy_logits)]
            for i in range(1, action_batch.shape[1]):
                value, reward, policy_logits, hidden_state = self.model.recurrent_inference(
                    hidden_state, action_batch[:, i]
                )
                # Scale the gradient at the start of the dynamics function (See paper appendix Training)
                if self.config.scale_hidden_gradient == "register_hook":
                    hidden_state.register_hook(lambda grad: grad * 0.5)
                else:  # the paper's pseudocode
                    hidden_state = scale_gradient(hidden_state, 0.5)
                predictions.append((value, reward, policy_logits))
            # predictions: num_unroll_steps+1, 3, batch, 2*support_size+1 | 2*support_size+1 | 9 (according to the 2nd dim)

            ## Compute losses
            value_loss, reward_loss, policy_loss = (0, 0, 0)
            value, reward, policy_logits = predictions[0]
            # Ignore reward loss for the first batch step
            current_value_loss, _, current_policy_loss = self.loss_function(
                value.squeeze(-1),
                reward.squeeze(-1),
                policy_logits,
                target_value[:, 0],
                target_reward[:, 0],
                target_policy[:, 0],
            )
            value_loss += current_value_loss
            policy_loss += current_policy_loss
            # Compute priorities for the prioritized replay (See paper appendix Training)
            pred_value_scalar = (
                models.support_to_scalar(value, self.config.support_size)
                .detach()
                .cpu()
                .numpy()
                .squeeze()
            )
            priorities[:, 0] = (
                numpy.abs(pred_value_scalar - target_value_scalar[:, 0])
                ** self.config.PER_alpha
            )

            for i in range(1, len(predictions)):
                value, reward, policy_logits = predictions[i]
                (
                    current_value_loss,
                    current_reward_loss,
                    current_policy_loss,
                ) = self.loss_function(
                    value.squeeze(-1),
                    reward.squeeze(-1),
                    policy_logits,
                    target_value[:, i],
                    target_reward[:, i],
                    target_policy[:, i],
                )

                # Scale gradient by the number of unroll steps (See paper appendix Training)
                current_value_loss.register_hook(
                    lambda grad: grad / gradient_scale_batch[:, i]
                )
                current_reward_loss.register_hook(
                    lambda grad: grad / gradient_scale_batch[:, i]
                )
                current_policy_loss.register_hook(
                    lambda grad: grad / gradient_scale_batch[:, i]
                )

                value_loss += current_value_loss
                reward_loss += current_reward_loss
                policy_loss += current_policy_loss

                # Compute priorities for the prioritized replay (See paper appendix Training)
                pred_value_scalar = (
                    models.support_to_scalar(value, self.config.support_size)
                    .detach()
                    .cpu()
                    .numpy()
                    .squeeze()
                )
                priorities[:, i] = (
                    numpy.abs(pred_value_scalar - target_value_scalar[:, i])
                    ** self.config.PER_alpha
                )

            # Scale the value loss, paper recommends by 0.25 (See paper appendix Reanalyze)
            loss = value_loss * self.config.value_loss_weight + reward_loss + policy_loss
            if self.config.PER:
                # Correct PER bias by using importance-sampling (IS) weights
                loss *= weight_batch
            # Mean over batch dimension (pseudocode do a sum)
            loss = loss.mean()

            # Optimize
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.training_step += 1

            return (
                priorities,
                # For log purpose
                loss.item(),
                value_loss.mean().item(),
                reward_loss.mean().item(),
                policy_loss.mean().item(),
            )

        def update_lr(self):
            """
            Update learning rate
            """
            lr = self.config.lr_init * self.config.lr_decay_rate ** (
                self.training_step / self.config.lr_decay_steps
            )
            for param_group in self.optimizer.param_groups:
                param_group["lr"] = lr

        @staticmethod
        def loss_function(
            value,
            reward,
            policy_logits,
            target_value,
            target_reward,
            target_policy,
        ):
            # Cross-entropy seems to have a better convergence than MSE
            value_loss = (-target_value * torch.nn.LogSoftmax(dim=1)(value)).sum(1)
            reward_loss = (-target_reward * torch.nn.LogSoftmax(dim=1)(reward)).sum(1)
            policy_loss = (-target_policy * torch.nn.LogSoftmax(dim=1)(policy_logits)).sum(
                1
            )
            return value_loss, reward_loss, policy_loss

    return Trainer


def replay_batch(config, batch_size=4, seed=0):
    """A batch as ``ReplayBuffer.get_batch`` returns it (NumPy): stacked observations, the unrolled actions, value and
    reward targets (beyond the support's reach among them, and one past the end at 0), policy targets (visit
    distributions; uniform past the end of a game), importance weights and ``gradient_scale_batch`` (the steps left
    in the game, at most ``num_unroll_steps``)."""
    rng = numpy.random.default_rng(seed)
    steps, actions = config.num_unroll_steps + 1, len(config.action_space)
    observation_batch = rng.standard_normal((batch_size, *config.observation_shape)).tolist()
    action_batch = rng.integers(0, actions, (batch_size, steps)).tolist()
    in_game = rng.uniform(size=(batch_size, steps)) < 0.8
    target_value = (rng.uniform(-150, 150, (batch_size, steps)) * in_game).tolist()
    target_reward = rng.choice([0.0, 1.0, -1.0, 0.5, 140.0], (batch_size, steps)).tolist()
    visits = rng.uniform(size=(batch_size, steps, actions))
    target_policy = (visits / visits.sum(-1, keepdims=True)).tolist()
    weight_batch = rng.uniform(0.2, 1.0, batch_size)
    weight_batch /= weight_batch.max()
    game_left = rng.integers(1, steps + 2, batch_size)
    gradient_scale_batch = [[min(config.num_unroll_steps, int(g))] * steps for g in game_left]
    return (observation_batch, action_batch, target_value, target_reward, target_policy, weight_batch,
            gradient_scale_batch)
