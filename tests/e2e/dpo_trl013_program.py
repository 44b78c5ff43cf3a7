"""trl 0.13's preference training (``trainer/utils.py``'s ``pad``, ``flush_left``, ``selective_log_softmax``,
``cap_exp``, ``RunningMoments``; ``DataCollatorForPreference``; ``DPOTrainer``) for ``torch`` being torch or kiln,
around ``dpo_reward_sft_program.py``'s GPT-2: the second half of the program of
``test_porting_probes_dpo_reward_sft.py``, whose docstring says what it covers and what was adapted."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from e2e.dpo_reward_sft_program import EOS, PAD, VOCAB, trl_utils


def trl_utils_modern(torch):
    """trl 0.13's ``trainer/utils.py``: ``pad`` (left or right), ``flush_left``, ``selective_log_softmax``,
    ``cap_exp``/``get_exp_cap`` and ``RunningMoments`` (one process), and ``DataCollatorForPreference``."""
    F = torch.nn.functional

    def pad(tensors, padding_value=0, padding_side="right"):
        # Determine the maximum shape for each dimension
        output_shape = np.max([t.shape for t in tensors], 0).tolist()
        # Create an output tensor filled with the padding value
        output = torch.full((len(tensors), *output_shape), padding_value, dtype=tensors[0].dtype, device=tensors[0].device)
        for i, t in enumerate(tensors):
            # Determine the slice for the sequence dimension
            if padding_side == "left":
                seq_slice = slice(output_shape[0] - t.shape[0], output_shape[0])
            elif padding_side == "right":
                seq_slice = slice(0, t.shape[0])
            else:
                raise ValueError("padding_side must be 'left' or 'right'")
            slices = (seq_slice,) + tuple(slice(0, s) for s in t.shape[1:])
            output[i][slices] = t
        return output

    def flush_left(mask, *tensors):
        # Create copy of mask and tensors
        mask = mask.clone()
        tensors = [t.clone() for t in tensors]
        # Shift non-zero values to the left
        for i in range(mask.size(0)):
            first_one_idx = torch.nonzero(mask[i])[0].item()
            mask[i] = torch.roll(mask[i], shifts=-first_one_idx)
            for tensor in tensors:
                tensor[i] = torch.roll(tensor[i], shifts=-first_one_idx)
        # Get the first column idx that is all zeros and remove every column after that
        empty_cols = torch.sum(mask, dim=0) == 0
        first_empty_col = torch.nonzero(empty_cols)[0].item() if empty_cols.any() else mask.size(1)
        mask = mask[:, :first_empty_col]
        for i, tensor in enumerate(tensors):
            tensors[i] = tensor[:, :first_empty_col]
        if not tensors:
            return mask
        else:
            return mask, *tensors

    def selective_log_softmax(logits, index):
        if logits.dtype in [torch.float32, torch.float64]:
            selected_logits = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)
            # loop to reduce peak mem consumption
            logsumexp_values = torch.stack([torch.logsumexp(lg, dim=-1) for lg in logits])
            per_token_logps = selected_logits - logsumexp_values  # log_softmax(x_i) = x_i - logsumexp(x)
        else:
            # logsumexp approach is unstable with bfloat16, fall back to slightly less efficent approach
            per_token_logps = []
            for row_logits, row_labels in zip(logits, index):  # loop to reduce peak mem consumption
                row_logps = F.log_softmax(row_logits, dim=-1)
                row_per_token_logps = row_logps.gather(dim=-1, index=row_labels.unsqueeze(-1)).squeeze(-1)
                per_token_logps.append(row_per_token_logps)
            per_token_logps = torch.stack(per_token_logps)
        return per_token_logps

    def get_exp_cap(value, decimal=4):
        vdtype_max = torch.zeros([1]).to(value.dtype) + torch.finfo(value.dtype).max
        vdtype_log_max = torch.log(vdtype_max).to(value.device)
        return torch.floor(vdtype_log_max * 10**decimal) / 10**decimal if decimal > 0 else vdtype_log_max

    def cap_exp(value, cap=-1):
        # Cap the exponent value below the upper-bound to avoid overflow, before calling torch.exp
        cap = get_exp_cap(value) if cap < 0 else cap
        return torch.exp(torch.clamp(value, max=cap))

    class RunningMoments:
        def __init__(self):
            self.mean, self.std, self.var, self.count = 0, 1, 1, 1e-24

        @torch.no_grad()
        def update(self, xs):
            xs_count = xs.numel()
            xs_var, xs_mean = torch.var_mean(xs, unbiased=False)
            xs_mean, xs_var = xs_mean.float(), xs_var.float()

            delta = xs_mean - self.mean
            tot_count = self.count + xs_count

            new_sum = xs_var * xs_count
            # correct old_sum deviation accounting for the new mean
            old_sum = self.var * self.count + delta**2 * self.count * xs_count / tot_count
            tot_sum = old_sum + new_sum

            self.mean += (delta * xs_count / tot_count).item()
            new_var = tot_sum / tot_count
            self.std = (new_var * tot_count / (tot_count - 1)).float().sqrt().item()
            self.var = new_var.item()
            self.count = tot_count

            return xs_mean.item(), (xs_var * xs_count / (xs_count - 1)).float().sqrt().item()

    def preference_collate(examples, pad_token_id=PAD):
        # Convert to tensor
        prompt_input_ids = [torch.tensor(example["prompt_input_ids"]) for example in examples]
        prompt_attention_mask = [torch.ones_like(input_ids) for input_ids in prompt_input_ids]
        chosen_input_ids = [torch.tensor(example["chosen_input_ids"]) for example in examples]
        chosen_attention_mask = [torch.ones_like(input_ids) for input_ids in chosen_input_ids]
        rejected_input_ids = [torch.tensor(example["rejected_input_ids"]) for example in examples]
        rejected_attention_mask = [torch.ones_like(input_ids) for input_ids in rejected_input_ids]

        # Pad
        output = {}
        output["prompt_input_ids"] = pad(prompt_input_ids, padding_value=pad_token_id, padding_side="left")
        output["prompt_attention_mask"] = pad(prompt_attention_mask, padding_value=0, padding_side="left")
        output["chosen_input_ids"] = pad(chosen_input_ids, padding_value=pad_token_id)
        output["chosen_attention_mask"] = pad(chosen_attention_mask, padding_value=0)
        output["rejected_input_ids"] = pad(rejected_input_ids, padding_value=pad_token_id)
        output["rejected_attention_mask"] = pad(rejected_attention_mask, padding_value=0)
        return output

    return SimpleNamespace(pad=pad, flush_left=flush_left, selective_log_softmax=selective_log_softmax,
                           cap_exp=cap_exp, RunningMoments=RunningMoments, preference_collate=preference_collate)


def trl_dpo_modern(torch, nn, F):
    """trl 0.13's ``DPOTrainer``: prompt and completions apart (``concatenated_inputs``), ``concatenated_forward``
    by ``flush_left``, ``torch.roll`` and ``selective_log_softmax`` (its RPO ``nll_loss``, the masked mean logits),
    ``compute_ref_log_probs``, ``dpo_loss`` with the f-divergences and the loss types of that release, metrics by
    ``.mean().item()``."""
    utils = trl_utils_modern(torch)
    pad_to_length = trl_utils(torch, nn, F).pad_to_length

    class DPOTrainer:
        def __init__(self, ref_model, beta=0.1, label_smoothing=0.0, loss_type="sigmoid", reference_free=False,
                     rpo_alpha=None, f_divergence_type="reverse_kl", alpha_coef=0.5, discopop_tau=0.05):
            self.ref_model, self.beta, self.label_smoothing = ref_model, beta, label_smoothing
            self.loss_type, self.reference_free, self.padding_value = loss_type, reference_free, PAD
            self.f_divergence_type, self.alpha_coef = f_divergence_type, alpha_coef
            self.args = SimpleNamespace(rpo_alpha=rpo_alpha, discopop_tau=discopop_tau)
            self.running = utils.RunningMoments()

        @staticmethod
        def concatenated_inputs(batch, padding_value):
            output = {}
            # For the prompt, the input_ids are the same for both the chosen and rejected responses
            output["prompt_input_ids"] = torch.cat([batch["prompt_input_ids"], batch["prompt_input_ids"]], dim=0)
            output["prompt_attention_mask"] = torch.cat(
                [batch["prompt_attention_mask"], batch["prompt_attention_mask"]], dim=0
            )
            # Concatenate the chosen and rejected completions
            max_completion_length = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
            output["completion_input_ids"] = torch.cat(
                (
                    pad_to_length(batch["chosen_input_ids"], max_completion_length, pad_value=padding_value),
                    pad_to_length(batch["rejected_input_ids"], max_completion_length, pad_value=padding_value),
                ),
            )
            output["completion_attention_mask"] = torch.cat(
                (
                    pad_to_length(batch["chosen_attention_mask"], max_completion_length, pad_value=0),
                    pad_to_length(batch["rejected_attention_mask"], max_completion_length, pad_value=0),
                ),
            )
            return output

        def dpo_loss(self, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps):
            device = "cpu"
            # Get the log ratios for the chosen and rejected responses
            chosen_logratios = chosen_logps.to(device) - (not self.reference_free) * ref_chosen_logps.to(device)
            rejected_logratios = rejected_logps.to(device) - (not self.reference_free) * ref_rejected_logps.to(device)

            if self.f_divergence_type == "alpha_divergence":
                alpha_coef = self.alpha_coef
                logits = (utils.cap_exp(rejected_logratios * -alpha_coef)
                          - utils.cap_exp(chosen_logratios * -alpha_coef)) / alpha_coef
            else:
                logratios = chosen_logps - rejected_logps
                if self.reference_free:
                    ref_logratios = torch.tensor([0], dtype=logratios.dtype, device=logratios.device)
                else:
                    ref_logratios = ref_chosen_logps - ref_rejected_logps

                logratios = logratios.to(device)
                ref_logratios = ref_logratios.to(device)
                logits = logratios - ref_logratios

                if self.f_divergence_type == "js_divergence":
                    # The js-divergence formula: log(2 * u / (1 + u))
                    logits -= F.softplus(chosen_logratios) - F.softplus(rejected_logratios)

            if self.loss_type == "sigmoid":
                losses = (
                    -F.logsigmoid(self.beta * logits) * (1 - self.label_smoothing)
                    - F.logsigmoid(-self.beta * logits) * self.label_smoothing
                )
            elif self.loss_type == "robust":
                losses = (
                    -F.logsigmoid(self.beta * logits) * (1 - self.label_smoothing)
                    + F.logsigmoid(-self.beta * logits) * self.label_smoothing
                ) / (1 - 2 * self.label_smoothing)
            elif self.loss_type == "exo_pair":
                if self.label_smoothing == 0:
                    self.label_smoothing = 1e-3
                losses = (self.beta * logits).sigmoid() * (
                    F.logsigmoid(self.beta * logits) - math.log(1 - self.label_smoothing)
                ) + (-self.beta * logits).sigmoid() * (F.logsigmoid(-self.beta * logits) - math.log(self.label_smoothing))
            elif self.loss_type == "hinge":
                losses = torch.relu(1 - self.beta * logits)
            elif self.loss_type == "ipo":
                losses = (logits - 1 / (2 * self.beta)) ** 2
            elif self.loss_type == "bco_pair":
                chosen_logratios = chosen_logps - ref_chosen_logps
                rejected_logratios = rejected_logps - ref_rejected_logps
                chosen_rewards = self.beta * chosen_logratios
                rejected_rewards = self.beta * rejected_logratios
                rewards = torch.cat((chosen_rewards, rejected_rewards), 0).mean().detach()
                self.running.update(rewards)
                delta = self.running.mean
                losses = -F.logsigmoid((self.beta * chosen_logratios) - delta) - F.logsigmoid(
                    -(self.beta * rejected_logratios - delta)
                )
            elif self.loss_type == "sppo_hard":
                a = chosen_logps - ref_chosen_logps
                b = rejected_logps - ref_rejected_logps
                losses = (a - 0.5 / self.beta) ** 2 + (b + 0.5 / self.beta) ** 2
            elif self.loss_type == "nca_pair":
                chosen_rewards = (chosen_logps - ref_chosen_logps) * self.beta
                rejected_rewards = (rejected_logps - ref_rejected_logps) * self.beta
                losses = (
                    -F.logsigmoid(chosen_rewards)
                    - 0.5 * F.logsigmoid(-chosen_rewards)
                    - 0.5 * F.logsigmoid(-rejected_rewards)
                )
            elif self.loss_type == "aot_pair":
                chosen_logratios = chosen_logps - ref_chosen_logps
                rejected_logratios = rejected_logps - ref_rejected_logps
                chosen_logratios_sorted, _ = torch.sort(chosen_logratios, dim=0)
                rejected_logratios_sorted, _ = torch.sort(rejected_logratios, dim=0)
                delta = chosen_logratios_sorted - rejected_logratios_sorted
                losses = (
                    -F.logsigmoid(self.beta * delta) * (1 - self.label_smoothing)
                    - F.logsigmoid(-self.beta * delta) * self.label_smoothing
                )
            elif self.loss_type == "apo_zero":
                losses_chosen = 1 - F.sigmoid(self.beta * chosen_logratios)  # Increase chosen likelihood
                losses_rejected = F.sigmoid(self.beta * rejected_logratios)  # Decrease rejected likelihood
                losses = losses_chosen + losses_rejected
            elif self.loss_type == "discopop":
                logits = logits * self.beta
                # Modulate the mixing coefficient based on the log ratio magnitudes
                log_ratio_modulation = torch.sigmoid(logits / self.args.discopop_tau)
                logistic_component = -F.logsigmoid(logits)
                exp_component = torch.exp(-logits)
                # Blend between logistic and exponential component based on log ratio modulation
                losses = logistic_component * (1 - log_ratio_modulation) + exp_component * log_ratio_modulation
            else:
                raise ValueError(f"Unknown loss type: {self.loss_type}.")

            chosen_rewards = self.beta * (chosen_logps.to(device) - ref_chosen_logps.to(device)).detach()
            rejected_rewards = self.beta * (rejected_logps.to(device) - ref_rejected_logps.to(device)).detach()

            return losses, chosen_rewards, rejected_rewards

        def concatenated_forward(self, model, batch):
            num_examples = batch["prompt_input_ids"].shape[0]
            concatenated_batch = self.concatenated_inputs(batch, padding_value=self.padding_value)
            model_kwargs = {}
            prompt_input_ids = concatenated_batch["prompt_input_ids"]
            prompt_attention_mask = concatenated_batch["prompt_attention_mask"]
            completion_input_ids = concatenated_batch["completion_input_ids"]
            completion_attention_mask = concatenated_batch["completion_attention_mask"]
            # Concatenate the prompt and completion inputs
            input_ids = torch.cat((prompt_input_ids, completion_input_ids), dim=1)
            attention_mask = torch.cat((prompt_attention_mask, completion_attention_mask), dim=1)
            # Mask the prompt but not the completion for the loss
            loss_mask = torch.cat(
                (torch.zeros_like(prompt_attention_mask), completion_attention_mask),
                dim=1,
            )
            # Flush left to reduce the memory usage
            # [[0, 0, x, x, x, x],  ->  [[x, x, x, x],
            #  [0, x, x, x, 0, 0]]       [x, x, x, 0]]
            attention_mask, input_ids, loss_mask = utils.flush_left(attention_mask, input_ids, loss_mask)
            model_kwargs["attention_mask"] = attention_mask
            outputs = model(input_ids, **model_kwargs)
            logits = outputs.logits
            # Offset the logits by one to align with the labels
            labels = torch.roll(input_ids, shifts=-1, dims=1)
            loss_mask = torch.roll(loss_mask, shifts=-1, dims=1).bool()

            if logits.shape[:2] != labels.shape[:2]:
                # for llava, the returned logits include the image tokens (placed before the text tokens)
                seq_len = labels.shape[1]
                logits = logits[:, -seq_len:]

            # Compute the log probabilities of the labels
            labels[~loss_mask] = 0  # dummy token; we'll ignore the losses on these tokens later
            per_token_logps = utils.selective_log_softmax(logits, labels)
            per_token_logps[~loss_mask] = 0
            per_token_logps = torch.roll(per_token_logps, shifts=1, dims=1)

            all_logps = per_token_logps[:, 1:].sum(-1)

            output = {}
            if self.args.rpo_alpha is not None:
                # Only use the chosen logits for the RPO loss
                chosen_logits = logits[:num_examples]
                chosen_labels = labels[:num_examples]
                # Compute the log probabilities of the labels
                output["nll_loss"] = F.cross_entropy(
                    torch.flatten(chosen_logits, end_dim=1), torch.flatten(chosen_labels, end_dim=1), ignore_index=0
                )
            if self.loss_type == "ipo":
                all_logps = all_logps / loss_mask.sum(-1)

            output["chosen_logps"] = all_logps[:num_examples]
            output["rejected_logps"] = all_logps[num_examples:]
            # Compute the mean logits
            mean_chosen_logits = logits[:num_examples][loss_mask[:num_examples]].mean()
            mean_rejected_logits = logits[num_examples:][loss_mask[num_examples:]].mean()
            output["mean_chosen_logits"] = mean_chosen_logits
            output["mean_rejected_logits"] = mean_rejected_logits
            return output

        def compute_ref_log_probs(self, batch):
            with torch.no_grad():
                ref_model_output = self.concatenated_forward(self.ref_model, batch)
            return ref_model_output["chosen_logps"], ref_model_output["rejected_logps"]

        def get_batch_loss_metrics(self, model, batch, train_eval="train"):
            metrics = {}
            model_output = self.concatenated_forward(model, batch)
            # if ref_chosen_logps and ref_rejected_logps in batch use them, otherwise use the reference model
            if "ref_chosen_logps" in batch and "ref_rejected_logps" in batch:
                ref_chosen_logps = batch["ref_chosen_logps"]
                ref_rejected_logps = batch["ref_rejected_logps"]
            else:
                ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(batch)

            losses, chosen_rewards, rejected_rewards = self.dpo_loss(
                model_output["chosen_logps"], model_output["rejected_logps"], ref_chosen_logps, ref_rejected_logps
            )
            reward_accuracies = (chosen_rewards > rejected_rewards).float()

            if self.args.rpo_alpha is not None:
                losses = losses + self.args.rpo_alpha * model_output["nll_loss"]  # RPO loss from V3 of the paper

            prefix = "eval_" if train_eval == "eval" else ""
            metrics[f"{prefix}rewards/chosen"] = chosen_rewards.mean().item()
            metrics[f"{prefix}rewards/rejected"] = rejected_rewards.mean().item()
            metrics[f"{prefix}rewards/accuracies"] = reward_accuracies.mean().item()
            metrics[f"{prefix}rewards/margins"] = (chosen_rewards - rejected_rewards).mean().item()
            metrics[f"{prefix}logps/chosen"] = model_output["chosen_logps"].detach().mean().item()
            metrics[f"{prefix}logps/rejected"] = model_output["rejected_logps"].detach().mean().item()
            metrics[f"{prefix}logits/chosen"] = model_output["mean_chosen_logits"].detach().mean().item()
            metrics[f"{prefix}logits/rejected"] = model_output["mean_rejected_logits"].detach().mean().item()
            if self.args.rpo_alpha is not None:
                metrics[f"{prefix}nll_loss"] = model_output["nll_loss"].detach().mean().item()
            return losses.mean(), metrics

    return DPOTrainer


def preference_examples(count, seed=4):
    """trl 0.13's tokenized rows: ``prompt_input_ids`` apart from the completions (each ending in EOS)."""
    rng = np.random.default_rng(seed)
    draw = lambda low, high: rng.integers(4, VOCAB, rng.integers(low, high)).tolist()  # noqa: E731
    return [{"prompt_input_ids": draw(1, 4), "chosen_input_ids": draw(1, 4) + [EOS],
             "rejected_input_ids": draw(1, 5) + [EOS]} for _ in range(count)]
