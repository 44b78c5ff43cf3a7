"""ControlNet as lllyasviel/ControlNet's ``cldm/cldm.py`` writes it (``torch`` is ``torch`` or ``kiln``), over the tiny
latent diffusion model of ``sd_ldm_program.py``, for ``test_porting_probes_controlnet.py``: ``ControlledUnetModel``
(the locked encoder under ``torch.no_grad()``, ``h += control.pop()``, skips ``hs.pop() + control.pop()``),
``ControlNet`` (a trainable copy of the encoder with ``zero_convs``, the ``input_hint_block`` added once by
``h += guided_hint``, ``middle_block_out``), ``ControlLDM`` (``apply_model`` with ``c_concat``/``c_crossattn``,
``control_scales``, ``configure_optimizers`` with ``sd_locked``) and ``tool_add_control.py``'s copy of the UNet's
weights into the control model.

The hint block's widths (16, 32, 96, 256) and its three stride-2 convs (512-pixel hints to 64 latents) are (4, 8, 8,
16) and one stride-2 conv here (8-pixel hints to 4 x 4 latents).
"""

from __future__ import annotations

from e2e.sd_ldm_program import UNET_PARAMS, latent_diffusion
from e2e.stable_diffusion_program import CHANNELS


def control_classes(LatentDiffusion, m, torch, nn, float_dtype=None):
    """``(ControlLDM, ControlledUnetModel, ControlNet)`` over ``sd_ldm_program``'s ``LatentDiffusion`` and ``m``
    (``sd_modules``)."""
    UNetModel, TimestepEmbedSequential = m["UNetModel"], m["TimestepEmbedSequential"]
    conv_nd, zero_module, linear, ResBlock = m["conv_nd"], m["zero_module"], m["linear"], m["ResBlock"]
    SpatialTransformer, Downsample, timestep_embedding = m["SpatialTransformer"], m["Downsample"], m["timestep_embedding"]

    class ControlledUnetModel(UNetModel):
        def forward(self, x, timesteps=None, context=None, control=None, only_mid_control=False, **kwargs):
            hs = []
            with torch.no_grad():
                t_emb = timestep_embedding(timesteps, self.model_channels, repeat_only=False)
                emb = self.time_embed(t_emb)
                h = x.type(self.dtype)
                for module in self.input_blocks:
                    h = module(h, emb, context)
                    hs.append(h)
                h = self.middle_block(h, emb, context)
            if control is not None:
                h += control.pop()
            for i, module in enumerate(self.output_blocks):
                if only_mid_control or control is None:
                    h = torch.cat([h, hs.pop()], dim=1)
                else:
                    h = torch.cat([h, hs.pop() + control.pop()], dim=1)
                h = module(h, emb, context)
            h = h.type(x.dtype)
            return self.out(h)

    class ControlNet(nn.Module):
        def __init__(self, image_size, in_channels, model_channels, hint_channels, num_res_blocks,
                     attention_resolutions, dropout=0, channel_mult=(1, 2, 4, 8), conv_resample=True, dims=2,
                     use_checkpoint=False, num_heads=-1, num_head_channels=-1, use_scale_shift_norm=False,
                     resblock_updown=False, use_spatial_transformer=False, transformer_depth=1, context_dim=None,
                     legacy=True, use_linear_in_transformer=False, **ignored):
            super().__init__()
            self.dims = dims
            self.image_size = image_size
            self.in_channels = in_channels
            self.model_channels = model_channels
            self.num_res_blocks = [num_res_blocks] * len(channel_mult)
            self.attention_resolutions = attention_resolutions
            self.dtype = float_dtype or torch.float32
            time_embed_dim = model_channels * 4
            self.time_embed = nn.Sequential(
                linear(model_channels, time_embed_dim),
                nn.SiLU(),
                linear(time_embed_dim, time_embed_dim),
            )
            self.input_blocks = nn.ModuleList(
                [TimestepEmbedSequential(conv_nd(dims, in_channels, model_channels, 3, padding=1))])
            self.zero_convs = nn.ModuleList([self.make_zero_conv(model_channels)])
            self.input_hint_block = TimestepEmbedSequential(
                conv_nd(dims, hint_channels, 4, 3, padding=1),
                nn.SiLU(),
                conv_nd(dims, 4, 4, 3, padding=1),
                nn.SiLU(),
                conv_nd(dims, 4, 8, 3, padding=1, stride=2),
                nn.SiLU(),
                conv_nd(dims, 8, 16, 3, padding=1),
                nn.SiLU(),
                zero_module(conv_nd(dims, 16, model_channels, 3, padding=1))
            )
            self._feature_size = model_channels
            input_block_chans = [model_channels]
            ch = model_channels
            ds = 1
            for level, mult in enumerate(channel_mult):
                for nr in range(self.num_res_blocks[level]):
                    layers = [ResBlock(ch, time_embed_dim, dropout, out_channels=mult * model_channels, dims=dims,
                                       use_checkpoint=use_checkpoint, use_scale_shift_norm=use_scale_shift_norm)]
                    ch = mult * model_channels
                    if ds in attention_resolutions:
                        if num_head_channels == -1:
                            dim_head = ch // num_heads
                        else:
                            num_heads = ch // num_head_channels
                            dim_head = num_head_channels
                        if legacy:
                            dim_head = ch // num_heads if use_spatial_transformer else num_head_channels
                        layers.append(SpatialTransformer(ch, num_heads, dim_head, depth=transformer_depth,
                                                         context_dim=context_dim, disable_self_attn=False,
                                                         use_linear=use_linear_in_transformer,
                                                         use_checkpoint=use_checkpoint))
                    self.input_blocks.append(TimestepEmbedSequential(*layers))
                    self.zero_convs.append(self.make_zero_conv(ch))
                    self._feature_size += ch
                    input_block_chans.append(ch)
                if level != len(channel_mult) - 1:
                    out_ch = ch
                    self.input_blocks.append(TimestepEmbedSequential(
                        ResBlock(ch, time_embed_dim, dropout, out_channels=out_ch, dims=dims,
                                 use_checkpoint=use_checkpoint, use_scale_shift_norm=use_scale_shift_norm, down=True)
                        if resblock_updown else Downsample(ch, conv_resample, dims=dims, out_channels=out_ch)
                    ))
                    ch = out_ch
                    input_block_chans.append(ch)
                    self.zero_convs.append(self.make_zero_conv(ch))
                    ds *= 2
                    self._feature_size += ch
            if num_head_channels == -1:
                dim_head = ch // num_heads
            else:
                num_heads = ch // num_head_channels
                dim_head = num_head_channels
            if legacy:
                dim_head = ch // num_heads if use_spatial_transformer else num_head_channels
            self.middle_block = TimestepEmbedSequential(
                ResBlock(ch, time_embed_dim, dropout, dims=dims, use_checkpoint=use_checkpoint,
                         use_scale_shift_norm=use_scale_shift_norm),
                SpatialTransformer(ch, num_heads, dim_head, depth=transformer_depth, context_dim=context_dim,
                                   disable_self_attn=False, use_linear=use_linear_in_transformer,
                                   use_checkpoint=use_checkpoint),
                ResBlock(ch, time_embed_dim, dropout, dims=dims, use_checkpoint=use_checkpoint,
                         use_scale_shift_norm=use_scale_shift_norm),
            )
            self.middle_block_out = self.make_zero_conv(ch)
            self._feature_size += ch

        def make_zero_conv(self, channels):
            return TimestepEmbedSequential(zero_module(conv_nd(self.dims, channels, channels, 1, padding=0)))

        def forward(self, x, hint, timesteps, context, **kwargs):
            t_emb = timestep_embedding(timesteps, self.model_channels, repeat_only=False)
            emb = self.time_embed(t_emb)
            guided_hint = self.input_hint_block(hint, emb, context)
            outs = []
            h = x.type(self.dtype)
            for module, zero_conv in zip(self.input_blocks, self.zero_convs):
                if guided_hint is not None:
                    h = module(h, emb, context)
                    h += guided_hint
                    guided_hint = None
                else:
                    h = module(h, emb, context)
                outs.append(zero_conv(h, emb, context))
            h = self.middle_block(h, emb, context)
            outs.append(self.middle_block_out(h, emb, context))
            return outs

    class ControlLDM(LatentDiffusion):
        def __init__(self, control_stage_config, control_key, only_mid_control, sd_locked=True, learning_rate=1e-3,
                     *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.control_model = control_stage_config["target"](**control_stage_config["params"])
            self.control_key = control_key
            self.only_mid_control = only_mid_control
            self.control_scales = [1.0] * 13
            self.sd_locked = sd_locked
            self.learning_rate = learning_rate
            self.cond_stage_trainable = False

        def apply_model(self, x_noisy, t, cond, *args, **kwargs):
            assert isinstance(cond, dict)
            diffusion_model = self.model.diffusion_model
            cond_txt = torch.cat(cond['c_crossattn'], 1)
            if cond['c_concat'] is None:
                eps = diffusion_model(x=x_noisy, timesteps=t, context=cond_txt, control=None,
                                      only_mid_control=self.only_mid_control)
            else:
                control = self.control_model(x=x_noisy, hint=torch.cat(cond['c_concat'], 1), timesteps=t,
                                             context=cond_txt)
                control = [c * scale for c, scale in zip(control, self.control_scales)]
                eps = diffusion_model(x=x_noisy, timesteps=t, context=cond_txt, control=control,
                                      only_mid_control=self.only_mid_control)
            return eps

        def configure_optimizers(self):
            lr = self.learning_rate
            params = list(self.control_model.parameters())
            if not self.sd_locked:
                params += list(self.model.diffusion_model.output_blocks.parameters())
                params += list(self.model.diffusion_model.out.parameters())
            opt = torch.optim.AdamW(params, lr=lr)
            return opt

    return ControlLDM, ControlledUnetModel, ControlNet


def control_ldm(torch, nn, F, first_stage_model, float_dtype=None, sd_locked=True, only_mid_control=False):
    """The cldm_v15 config at tiny sizes, the UNet made to look pretrained (its zero-initialised parameters drawn),
    then the control model's weights copied from the UNet's where the names match (``tool_add_control.py``:
    ``control_model.*`` from ``model.diffusion_model.*``, the rest kept)."""

    def extend(LatentDiffusion, m):
        ControlLDM, ControlledUnetModel, ControlNet = control_classes(LatentDiffusion, m, torch, nn, float_dtype)
        control_stage_config = dict(target=ControlNet, params=dict(UNET_PARAMS, hint_channels=CHANNELS))
        return ControlLDM, ControlledUnetModel, dict(control_stage_config=control_stage_config, control_key="hint",
                                                     only_mid_control=only_mid_control, sd_locked=sd_locked)

    model = latent_diffusion(torch, nn, F, first_stage_model, float_dtype=float_dtype, original_elbo_weight=0.0,
                             extend=extend)
    with torch.no_grad():  # a pretrained UNet: its zero_module layers (and zero biases) hold trained values
        for p in model.model.diffusion_model.parameters():
            if not p.any():
                p.normal_(std=0.1)
    scratch_dict = model.state_dict()
    target_dict = {}
    for k in scratch_dict.keys():
        is_control, name = get_node_name(k, 'control_')
        if is_control:
            copy_k = 'model.diffusion_' + name
        else:
            copy_k = k
        if copy_k in scratch_dict:
            target_dict[k] = scratch_dict[copy_k].clone()
        else:
            target_dict[k] = scratch_dict[k].clone()
    model.load_state_dict(target_dict, strict=True)
    return model


def get_node_name(name, parent_name):
    """tool_add_control.py's."""
    if len(name) <= len(parent_name):
        return False, ''
    p = name[:len(parent_name)]
    if p != parent_name:
        return False, ''
    return True, name[len(parent_name):]
