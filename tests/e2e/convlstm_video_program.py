"""The video networks as their repositories write them: ndrplz/ConvLSTM_pytorch's ``ConvLSTM`` with a next-frame
predictor, C3D, R(2+1)D and a 3-D U-Net level, and piergiaj/pytorch-i3d's ``InceptionI3d`` (one Inception level), written
once for ``torch`` being torch or kiln: the programs of ``test_porting_probes_pointnet2_convlstm_c3d.py``, whose
docstring says what it covers."""

from __future__ import annotations


# --- ConvLSTM (convlstm.py) -------------------------------------------------------------------------------------------

FRAMES, SIDE = 4, 6


def convlstm(torch, nn, F, batch_first=True, return_all_layers=True):
    """convlstm.py's ``ConvLSTMCell`` and ``ConvLSTM`` as written there, and a next-frame predictor on top (a 1x1
    Conv2d on each step of the last layer's output)."""

    class ConvLSTMCell(nn.Module):

        def __init__(self, input_dim, hidden_dim, kernel_size, bias):
            super(ConvLSTMCell, self).__init__()
            self.input_dim = input_dim
            self.hidden_dim = hidden_dim
            self.kernel_size = kernel_size
            self.padding = kernel_size[0] // 2, kernel_size[1] // 2
            self.bias = bias
            self.conv = nn.Conv2d(in_channels=self.input_dim + self.hidden_dim,
                                  out_channels=4 * self.hidden_dim,
                                  kernel_size=self.kernel_size,
                                  padding=self.padding,
                                  bias=self.bias)

        def forward(self, input_tensor, cur_state):
            h_cur, c_cur = cur_state
            combined = torch.cat([input_tensor, h_cur], dim=1)  # concatenate along channel axis
            combined_conv = self.conv(combined)
            cc_i, cc_f, cc_o, cc_g = torch.split(combined_conv, self.hidden_dim, dim=1)
            i = torch.sigmoid(cc_i)
            f = torch.sigmoid(cc_f)
            o = torch.sigmoid(cc_o)
            g = torch.tanh(cc_g)
            c_next = f * c_cur + i * g
            h_next = o * torch.tanh(c_next)
            return h_next, c_next

        def init_hidden(self, batch_size, image_size):
            height, width = image_size
            return (torch.zeros(batch_size, self.hidden_dim, height, width, device=self.conv.weight.device),
                    torch.zeros(batch_size, self.hidden_dim, height, width, device=self.conv.weight.device))

    class ConvLSTM(nn.Module):

        def __init__(self, input_dim, hidden_dim, kernel_size, num_layers,
                     batch_first=False, bias=True, return_all_layers=False):
            super(ConvLSTM, self).__init__()
            self._check_kernel_size_consistency(kernel_size)
            kernel_size = self._extend_for_multilayer(kernel_size, num_layers)
            hidden_dim = self._extend_for_multilayer(hidden_dim, num_layers)
            if not len(kernel_size) == len(hidden_dim) == num_layers:
                raise ValueError('Inconsistent list length.')
            self.input_dim = input_dim
            self.hidden_dim = hidden_dim
            self.kernel_size = kernel_size
            self.num_layers = num_layers
            self.batch_first = batch_first
            self.bias = bias
            self.return_all_layers = return_all_layers
            cell_list = []
            for i in range(0, self.num_layers):
                cur_input_dim = self.input_dim if i == 0 else self.hidden_dim[i - 1]
                cell_list.append(ConvLSTMCell(input_dim=cur_input_dim,
                                              hidden_dim=self.hidden_dim[i],
                                              kernel_size=self.kernel_size[i],
                                              bias=self.bias))
            self.cell_list = nn.ModuleList(cell_list)

        def forward(self, input_tensor, hidden_state=None):
            if not self.batch_first:
                # (t, b, c, h, w) -> (b, t, c, h, w)
                input_tensor = input_tensor.permute(1, 0, 2, 3, 4)
            b, _, _, h, w = input_tensor.size()
            if hidden_state is not None:
                raise NotImplementedError()
            else:
                hidden_state = self._init_hidden(batch_size=b, image_size=(h, w))
            layer_output_list = []
            last_state_list = []
            seq_len = input_tensor.size(1)
            cur_layer_input = input_tensor
            for layer_idx in range(self.num_layers):
                h, c = hidden_state[layer_idx]
                output_inner = []
                for t in range(seq_len):
                    h, c = self.cell_list[layer_idx](input_tensor=cur_layer_input[:, t, :, :, :],
                                                     cur_state=[h, c])
                    output_inner.append(h)
                layer_output = torch.stack(output_inner, dim=1)
                cur_layer_input = layer_output
                layer_output_list.append(layer_output)
                last_state_list.append([h, c])
            if not self.return_all_layers:
                layer_output_list = layer_output_list[-1:]
                last_state_list = last_state_list[-1:]
            return layer_output_list, last_state_list

        def _init_hidden(self, batch_size, image_size):
            init_states = []
            for i in range(self.num_layers):
                init_states.append(self.cell_list[i].init_hidden(batch_size, image_size))
            return init_states

        @staticmethod
        def _check_kernel_size_consistency(kernel_size):
            if not (isinstance(kernel_size, tuple) or
                    (isinstance(kernel_size, list) and all([isinstance(elem, tuple) for elem in kernel_size]))):
                raise ValueError('`kernel_size` must be tuple or list of tuples')

        @staticmethod
        def _extend_for_multilayer(param, num_layers):
            if not isinstance(param, list):
                param = [param] * num_layers
            return param

    class NextFrame(nn.Module):
        def __init__(self):
            super().__init__()
            self.convlstm = ConvLSTM(1, [4, 3], [(3, 3), (1, 1)], 2, batch_first=batch_first,
                                     return_all_layers=return_all_layers)
            self.head = nn.Conv2d(3, 1, 1)

        def forward(self, frames):
            layer_output_list, last_state_list = self.convlstm(frames)
            outputs = layer_output_list[-1]
            b, t, c, h, w = outputs.shape
            return torch.sigmoid(self.head(outputs.reshape(b * t, c, h, w))).view(b, t, 1, h, w), last_state_list

    return NextFrame()


# --- C3D, R(2+1)D, a 3-D U-Net block ----------------------------------------------------------------------------------

VIDEO = (2, 3, 5, 9, 9)  # (B, C, T, H, W): odd sizes, so ceil_mode and the padded pool5 matter
VIDEO_CLASSES = 4


def video_nets(torch, nn, F, family="c3d"):
    """jfzhang95/pytorch-video-recognition's ``C3D`` (pool2 with ``ceil_mode``), torchvision's R(2+1)D
    (``R2Plus1dStem``, ``Conv2Plus1D`` in a residual block, ``AdaptiveAvgPool3d``) and a 3-D U-Net level (the
    pytorch-3dunet ``Decoder``: ``ConvTranspose3d`` up, ``torch.cat`` skip, trilinear ``F.interpolate``), tiny."""

    class C3D(nn.Module):
        def __init__(self, num_classes):
            super(C3D, self).__init__()
            self.conv1 = nn.Conv3d(3, 4, kernel_size=(3, 3, 3), padding=(1, 1, 1))
            self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
            self.conv2 = nn.Conv3d(4, 6, kernel_size=(3, 3, 3), padding=(1, 1, 1))
            self.pool2 = nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2), ceil_mode=True)
            self.conv3a = nn.Conv3d(6, 8, kernel_size=(3, 3, 3), padding=(1, 1, 1))
            self.conv3b = nn.Conv3d(8, 8, kernel_size=(3, 3, 3), padding=(1, 1, 1))
            self.pool5 = nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2), padding=(0, 1, 1))
            self.fc6 = nn.Linear(8 * 1 * 2 * 2, 12)
            self.fc7 = nn.Linear(12, 12)
            self.fc8 = nn.Linear(12, num_classes)
            self.dropout = nn.Dropout(p=0.0)
            self.relu = nn.ReLU()

        def forward(self, x):
            x = self.relu(self.conv1(x))
            x = self.pool1(x)
            x = self.relu(self.conv2(x))
            x = self.pool2(x)
            x = self.relu(self.conv3a(x))
            x = self.relu(self.conv3b(x))
            x = self.pool5(x)
            x = x.view(-1, 8 * 1 * 2 * 2)
            x = self.relu(self.fc6(x))
            x = self.dropout(x)
            x = self.relu(self.fc7(x))
            x = self.dropout(x)
            logits = self.fc8(x)
            return logits

    class Conv2Plus1D(nn.Sequential):
        def __init__(self, in_planes, out_planes, midplanes, stride=1, padding=1):
            super().__init__(
                nn.Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                          padding=(0, padding, padding), bias=False),
                nn.BatchNorm3d(midplanes),
                nn.ReLU(inplace=True),
                nn.Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1),
                          padding=(padding, 0, 0), bias=False),
            )

    class R2Plus1dStem(nn.Sequential):
        def __init__(self):
            super().__init__(
                nn.Conv3d(3, 5, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
                nn.BatchNorm3d(5),
                nn.ReLU(inplace=True),
                nn.Conv3d(5, 6, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
                nn.BatchNorm3d(6),
                nn.ReLU(inplace=True),
            )

    class BasicBlock(nn.Module):
        def __init__(self, inplanes, planes, stride=1, downsample=None):
            midplanes = (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)
            super().__init__()
            self.conv1 = nn.Sequential(Conv2Plus1D(inplanes, planes, midplanes, stride), nn.BatchNorm3d(planes),
                                       nn.ReLU(inplace=True))
            self.conv2 = nn.Sequential(Conv2Plus1D(planes, planes, midplanes), nn.BatchNorm3d(planes))
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            residual = x
            out = self.conv1(x)
            out = self.conv2(out)
            if self.downsample is not None:
                residual = self.downsample(x)
            out += residual
            out = self.relu(out)
            return out

    class R2Plus1D(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.stem = R2Plus1dStem()
            downsample = nn.Sequential(nn.Conv3d(6, 8, kernel_size=1, stride=2, bias=False), nn.BatchNorm3d(8))
            self.layer1 = BasicBlock(6, 6)
            self.layer2 = BasicBlock(6, 8, stride=2, downsample=downsample)
            self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            x = self.stem(x)
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.avgpool(x)
            x = x.flatten(1)
            x = self.fc(x)
            return x

    class DoubleConv(nn.Sequential):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.add_module("conv1", nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False))
            self.add_module("bn1", nn.BatchNorm3d(out_channels))
            self.add_module("relu1", nn.ReLU(inplace=True))

    class UNet3DLevel(nn.Module):
        """One encoder/decoder level: ``MaxPool3d`` down, ``ConvTranspose3d`` up to the skip's size (``output_size``),
        ``torch.cat`` (pytorch-3dunet's ``_joining``), then a trilinear ``F.interpolate`` head back to the input size."""

        def __init__(self, num_classes):
            super().__init__()
            self.encoder1 = DoubleConv(3, 4)
            self.pool = nn.MaxPool3d(kernel_size=2, ceil_mode=True)
            self.encoder2 = DoubleConv(4, 6)
            self.upconv = nn.ConvTranspose3d(6, 4, kernel_size=3, stride=2, padding=1)
            self.decoder = DoubleConv(8, 4)
            self.final_conv = nn.Conv3d(4, num_classes, 1)

        def forward(self, x):
            encoder_features = self.encoder1(x[:, :, 1:, 1:, 1:])  # (4, 8, 8): pooled to (2, 4, 4), the stride-2
            # transposed conv reaches 7 or 8 per spatial dim; output_size picks the skip's 8 (output padding 1)
            x = self.encoder2(self.pool(encoder_features))
            x = self.upconv(x, output_size=encoder_features.size()[2:])
            x = torch.cat((encoder_features, x), dim=1)
            x = self.decoder(x)
            x = F.interpolate(x, scale_factor=(1, 0.5, 0.5), mode="trilinear", align_corners=False)
            x = self.final_conv(x)
            x = F.interpolate(x, size=(5, 9, 9), mode="trilinear", align_corners=False)
            return x.mean(dim=(2, 3, 4))

    return {"c3d": C3D, "r2plus1d": R2Plus1D, "unet3d": UNet3DLevel}[family](VIDEO_CLASSES)


# --- I3D (pytorch_i3d.py), one Inception level ------------------------------------------------------------------------

I3D_CLIP, I3D_CLASSES = (2, 3, 6, 12, 12), 3


def i3d(torch, nn, F):
    """pytorch_i3d.py's ``MaxPool3dSamePadding`` and ``Unit3D`` (TF 'SAME' padding by ``F.pad`` of ``x.size()``),
    ``InceptionModule`` (``torch.cat`` of four branches) and ``InceptionI3d`` (the ``end_points`` dict registered by
    ``add_module`` in ``build``, run through ``self._modules[end_point]``, ``replace_logits``, ``squeeze(3)``), with
    its endpoints cut to Conv3d_1a, MaxPool3d_2a and Mixed_3b."""

    class MaxPool3dSamePadding(nn.MaxPool3d):

        def compute_pad(self, dim, s):
            if s % self.stride[dim] == 0:
                return max(self.kernel_size[dim] - self.stride[dim], 0)
            else:
                return max(self.kernel_size[dim] - (s % self.stride[dim]), 0)

        def forward(self, x):
            (batch, channel, t, h, w) = x.size()
            pad_t = self.compute_pad(0, t)
            pad_h = self.compute_pad(1, h)
            pad_w = self.compute_pad(2, w)
            pad_t_f = pad_t // 2
            pad_t_b = pad_t - pad_t_f
            pad_h_f = pad_h // 2
            pad_h_b = pad_h - pad_h_f
            pad_w_f = pad_w // 2
            pad_w_b = pad_w - pad_w_f
            pad = (pad_w_f, pad_w_b, pad_h_f, pad_h_b, pad_t_f, pad_t_b)
            x = F.pad(x, pad)
            return super(MaxPool3dSamePadding, self).forward(x)

    class Unit3D(nn.Module):

        def __init__(self, in_channels, output_channels, kernel_shape=(1, 1, 1), stride=(1, 1, 1), padding=0,
                     activation_fn=F.relu, use_batch_norm=True, use_bias=False, name='unit_3d'):
            super(Unit3D, self).__init__()
            self._output_channels = output_channels
            self._kernel_shape = kernel_shape
            self._stride = stride
            self._use_batch_norm = use_batch_norm
            self._activation_fn = activation_fn
            self._use_bias = use_bias
            self.name = name
            self.padding = padding
            self.conv3d = nn.Conv3d(in_channels=in_channels, out_channels=self._output_channels,
                                    kernel_size=self._kernel_shape, stride=self._stride, padding=0,
                                    bias=self._use_bias)
            if self._use_batch_norm:
                self.bn = nn.BatchNorm3d(self._output_channels, eps=0.001, momentum=0.01)

        def compute_pad(self, dim, s):
            if s % self._stride[dim] == 0:
                return max(self._kernel_shape[dim] - self._stride[dim], 0)
            else:
                return max(self._kernel_shape[dim] - (s % self._stride[dim]), 0)

        def forward(self, x):
            (batch, channel, t, h, w) = x.size()
            pad_t = self.compute_pad(0, t)
            pad_h = self.compute_pad(1, h)
            pad_w = self.compute_pad(2, w)
            pad_t_f = pad_t // 2
            pad_t_b = pad_t - pad_t_f
            pad_h_f = pad_h // 2
            pad_h_b = pad_h - pad_h_f
            pad_w_f = pad_w // 2
            pad_w_b = pad_w - pad_w_f
            pad = (pad_w_f, pad_w_b, pad_h_f, pad_h_b, pad_t_f, pad_t_b)
            x = F.pad(x, pad)
            x = self.conv3d(x)
            if self._use_batch_norm:
                x = self.bn(x)
            if self._activation_fn is not None:
                x = self._activation_fn(x)
            return x

    class InceptionModule(nn.Module):
        def __init__(self, in_channels, out_channels, name):
            super(InceptionModule, self).__init__()
            self.b0 = Unit3D(in_channels=in_channels, output_channels=out_channels[0], kernel_shape=[1, 1, 1], padding=0,
                             name=name + '/Branch_0/Conv3d_0a_1x1')
            self.b1a = Unit3D(in_channels=in_channels, output_channels=out_channels[1], kernel_shape=[1, 1, 1],
                              padding=0, name=name + '/Branch_1/Conv3d_0a_1x1')
            self.b1b = Unit3D(in_channels=out_channels[1], output_channels=out_channels[2], kernel_shape=[3, 3, 3],
                              name=name + '/Branch_1/Conv3d_0b_3x3')
            self.b2a = Unit3D(in_channels=in_channels, output_channels=out_channels[3], kernel_shape=[1, 1, 1],
                              padding=0, name=name + '/Branch_2/Conv3d_0a_1x1')
            self.b2b = Unit3D(in_channels=out_channels[3], output_channels=out_channels[4], kernel_shape=[3, 3, 3],
                              name=name + '/Branch_2/Conv3d_0b_3x3')
            self.b3a = MaxPool3dSamePadding(kernel_size=[3, 3, 3], stride=(1, 1, 1), padding=0)
            self.b3b = Unit3D(in_channels=in_channels, output_channels=out_channels[5], kernel_shape=[1, 1, 1],
                              padding=0, name=name + '/Branch_3/Conv3d_0b_1x1')
            self.name = name

        def forward(self, x):
            b0 = self.b0(x)
            b1 = self.b1b(self.b1a(x))
            b2 = self.b2b(self.b2a(x))
            b3 = self.b3b(self.b3a(x))
            return torch.cat([b0, b1, b2, b3], dim=1)

    class InceptionI3d(nn.Module):
        VALID_ENDPOINTS = ('Conv3d_1a_7x7', 'MaxPool3d_2a_3x3', 'Mixed_3b', 'Logits', 'Predictions')

        def __init__(self, num_classes=400, spatial_squeeze=True, final_endpoint='Logits', name='inception_i3d',
                     in_channels=3, dropout_keep_prob=0.5):
            super(InceptionI3d, self).__init__()
            self._num_classes = num_classes
            self._spatial_squeeze = spatial_squeeze
            self._final_endpoint = final_endpoint
            self.logits = None
            self.end_points = {}
            end_point = 'Conv3d_1a_7x7'
            self.end_points[end_point] = Unit3D(in_channels=in_channels, output_channels=4, kernel_shape=[3, 3, 3],
                                                stride=(1, 2, 2), padding=(1, 1, 1), name=name + end_point)
            end_point = 'MaxPool3d_2a_3x3'
            self.end_points[end_point] = MaxPool3dSamePadding(kernel_size=[1, 3, 3], stride=(1, 2, 2), padding=0)
            end_point = 'Mixed_3b'
            self.end_points[end_point] = InceptionModule(4, [2, 2, 3, 2, 3, 2], name + end_point)
            end_point = 'Logits'
            self.avg_pool = nn.AvgPool3d(kernel_size=[2, 3, 3], stride=(1, 1, 1))
            self.dropout = nn.Dropout(dropout_keep_prob)
            self.logits = Unit3D(in_channels=2 + 3 + 3 + 2, output_channels=self._num_classes, kernel_shape=[1, 1, 1],
                                 padding=0, activation_fn=None, use_batch_norm=False, use_bias=True, name='logits')
            self.build()

        def replace_logits(self, num_classes):
            self._num_classes = num_classes
            self.logits = Unit3D(in_channels=2 + 3 + 3 + 2, output_channels=self._num_classes, kernel_shape=[1, 1, 1],
                                 padding=0, activation_fn=None, use_batch_norm=False, use_bias=True, name='logits')

        def build(self):
            for k in self.end_points.keys():
                self.add_module(k, self.end_points[k])

        def forward(self, x):
            for end_point in self.VALID_ENDPOINTS:
                if end_point in self.end_points:
                    x = self._modules[end_point](x)  # use _modules to work with dataparallel
            x = self.logits(self.dropout(self.avg_pool(x)))
            if self._spatial_squeeze:
                logits = x.squeeze(3).squeeze(3)
            return logits

    model = InceptionI3d(num_classes=5, dropout_keep_prob=0.0)
    model.replace_logits(I3D_CLASSES)
    return model
