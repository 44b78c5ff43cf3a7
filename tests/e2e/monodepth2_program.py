"""Monodepth2 (nianticlabs/monodepth2: ``layers.py``, ``networks/depth_decoder.py``, ``networks/pose_cnn.py``,
``networks/resnet_encoder.py`` and ``trainer.py``'s ``predict_poses``, ``generate_images_pred``,
``compute_reprojection_loss`` and ``compute_losses``), written once for ``(torch, nn, F)`` being torch or kiln.

Sizes: frames of ``HEIGHT`` x ``WIDTH``, the decoder's and the PoseCNN's widths divided down (``DEC_CHANNELS``,
``POSE_CHANNELS``), and a small residual encoder in place of torchvision's ResNet-18 (the ``ResnetEncoder`` wrapper's
normalisation and its five features at strides 2 to 32, as ``resnet_encoder.py`` takes them). ``tie_noise`` replaces
``compute_losses``'s ``torch.randn(...) * 0.00001`` tie-breaker (fed, as the libraries' generators differ);
``dtype`` is the intrinsics' dtype (the reference's ``np.float32``).
"""

from __future__ import annotations

from argparse import Namespace
from collections import OrderedDict

import numpy as np

HEIGHT, WIDTH, BATCH = 64, 96, 2  # the encoder's last feature 2 x 3: a reflection pad needs 2 rows
SCALES, FRAME_IDS = [0, 1, 2, 3], [0, -1, 1]
DEC_CHANNELS = [2, 4, 4, 8, 8]          # the reference's [16, 32, 64, 128, 256]
ENC_CHANNELS = [4, 4, 8, 8, 8]          # ResNet-18's [64, 64, 128, 256, 512]
POSE_CHANNELS = [4, 4, 8, 8, 8, 8, 8]   # PoseCNN's [16, 32, 64, 128, 256, 256, 256]


def layers(torch, nn, F):
    """layers.py as written."""

    def disp_to_depth(disp, min_depth, max_depth):
        min_disp = 1 / max_depth
        max_disp = 1 / min_depth
        scaled_disp = min_disp + (max_disp - min_disp) * disp
        depth = 1 / scaled_disp
        return scaled_disp, depth

    def transformation_from_parameters(axisangle, translation, invert=False):
        R = rot_from_axisangle(axisangle)
        t = translation.clone()

        if invert:
            R = R.transpose(1, 2)
            t *= -1

        T = get_translation_matrix(t)

        if invert:
            M = torch.matmul(R, T)
        else:
            M = torch.matmul(T, R)

        return M

    def get_translation_matrix(translation_vector):
        T = torch.zeros(translation_vector.shape[0], 4, 4).to(device=translation_vector.device)

        t = translation_vector.contiguous().view(-1, 3, 1)

        T[:, 0, 0] = 1
        T[:, 1, 1] = 1
        T[:, 2, 2] = 1
        T[:, 3, 3] = 1
        T[:, :3, 3, None] = t

        return T

    def rot_from_axisangle(vec):
        angle = torch.norm(vec, 2, 2, True)
        axis = vec / (angle + 1e-7)

        ca = torch.cos(angle)
        sa = torch.sin(angle)
        C = 1 - ca

        x = axis[..., 0].unsqueeze(1)
        y = axis[..., 1].unsqueeze(1)
        z = axis[..., 2].unsqueeze(1)

        xs = x * sa
        ys = y * sa
        zs = z * sa
        xC = x * C
        yC = y * C
        zC = z * C
        xyC = x * yC
        yzC = y * zC
        zxC = z * xC

        rot = torch.zeros((vec.shape[0], 4, 4)).to(device=vec.device)

        rot[:, 0, 0] = torch.squeeze(x * xC + ca)
        rot[:, 0, 1] = torch.squeeze(xyC - zs)
        rot[:, 0, 2] = torch.squeeze(zxC + ys)
        rot[:, 1, 0] = torch.squeeze(xyC + zs)
        rot[:, 1, 1] = torch.squeeze(y * yC + ca)
        rot[:, 1, 2] = torch.squeeze(yzC - xs)
        rot[:, 2, 0] = torch.squeeze(zxC - ys)
        rot[:, 2, 1] = torch.squeeze(yzC + xs)
        rot[:, 2, 2] = torch.squeeze(z * zC + ca)
        rot[:, 3, 3] = 1

        return rot

    class ConvBlock(nn.Module):
        """Layer to perform a convolution followed by ELU
        """
        def __init__(self, in_channels, out_channels):
            super(ConvBlock, self).__init__()

            self.conv = Conv3x3(in_channels, out_channels)
            self.nonlin = nn.ELU(inplace=True)

        def forward(self, x):
            out = self.conv(x)
            out = self.nonlin(out)
            return out

    class Conv3x3(nn.Module):
        """Layer to pad and convolve input
        """
        def __init__(self, in_channels, out_channels, use_refl=True):
            super(Conv3x3, self).__init__()

            if use_refl:
                self.pad = nn.ReflectionPad2d(1)
            else:
                self.pad = nn.ZeroPad2d(1)
            self.conv = nn.Conv2d(int(in_channels), int(out_channels), 3)

        def forward(self, x):
            out = self.pad(x)
            out = self.conv(out)
            return out

    class BackprojectDepth(nn.Module):
        """Layer to transform a depth image into a point cloud
        """
        def __init__(self, batch_size, height, width):
            super(BackprojectDepth, self).__init__()

            self.batch_size = batch_size
            self.height = height
            self.width = width

            meshgrid = np.meshgrid(range(self.width), range(self.height), indexing='xy')
            self.id_coords = np.stack(meshgrid, axis=0).astype(np.float32)
            self.id_coords = nn.Parameter(torch.from_numpy(self.id_coords),
                                          requires_grad=False)

            self.ones = nn.Parameter(torch.ones(self.batch_size, 1, self.height * self.width),
                                     requires_grad=False)

            self.pix_coords = torch.unsqueeze(torch.stack(
                [self.id_coords[0].view(-1), self.id_coords[1].view(-1)], 0), 0)
            self.pix_coords = self.pix_coords.repeat(batch_size, 1, 1)
            self.pix_coords = nn.Parameter(torch.cat([self.pix_coords, self.ones], 1),
                                           requires_grad=False)

        def forward(self, depth, inv_K):
            cam_points = torch.matmul(inv_K[:, :3, :3], self.pix_coords)
            cam_points = depth.view(self.batch_size, 1, -1) * cam_points
            cam_points = torch.cat([cam_points, self.ones], 1)

            return cam_points

    class Project3D(nn.Module):
        """Layer which projects 3D points into a camera with intrinsics K and at position T
        """
        def __init__(self, batch_size, height, width, eps=1e-7):
            super(Project3D, self).__init__()

            self.batch_size = batch_size
            self.height = height
            self.width = width
            self.eps = eps

        def forward(self, points, K, T):
            P = torch.matmul(K, T)[:, :3, :]

            cam_points = torch.matmul(P, points)

            pix_coords = cam_points[:, :2, :] / (cam_points[:, 2, :].unsqueeze(1) + self.eps)
            pix_coords = pix_coords.view(self.batch_size, 2, self.height, self.width)
            pix_coords = pix_coords.permute(0, 2, 3, 1)
            pix_coords[..., 0] /= self.width - 1
            pix_coords[..., 1] /= self.height - 1
            pix_coords = (pix_coords - 0.5) * 2
            return pix_coords

    def upsample(x):
        """Upsample input tensor by a factor of 2
        """
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def get_smooth_loss(disp, img):
        """Computes the smoothness loss for a disparity image
        The color image is used for edge-aware smoothness
        """
        grad_disp_x = torch.abs(disp[:, :, :, :-1] - disp[:, :, :, 1:])
        grad_disp_y = torch.abs(disp[:, :, :-1, :] - disp[:, :, 1:, :])

        grad_img_x = torch.mean(torch.abs(img[:, :, :, :-1] - img[:, :, :, 1:]), 1, keepdim=True)
        grad_img_y = torch.mean(torch.abs(img[:, :, :-1, :] - img[:, :, 1:, :]), 1, keepdim=True)

        grad_disp_x *= torch.exp(-grad_img_x)
        grad_disp_y *= torch.exp(-grad_img_y)

        return grad_disp_x.mean() + grad_disp_y.mean()

    class SSIM(nn.Module):
        """Layer to compute the SSIM loss between a pair of images
        """
        def __init__(self):
            super(SSIM, self).__init__()
            self.mu_x_pool = nn.AvgPool2d(3, 1)
            self.mu_y_pool = nn.AvgPool2d(3, 1)
            self.sig_x_pool = nn.AvgPool2d(3, 1)
            self.sig_y_pool = nn.AvgPool2d(3, 1)
            self.sig_xy_pool = nn.AvgPool2d(3, 1)

            self.refl = nn.ReflectionPad2d(1)

            self.C1 = 0.01 ** 2
            self.C2 = 0.03 ** 2

        def forward(self, x, y):
            x = self.refl(x)
            y = self.refl(y)

            mu_x = self.mu_x_pool(x)
            mu_y = self.mu_y_pool(y)

            sigma_x = self.sig_x_pool(x ** 2) - mu_x ** 2
            sigma_y = self.sig_y_pool(y ** 2) - mu_y ** 2
            sigma_xy = self.sig_xy_pool(x * y) - mu_x * mu_y

            SSIM_n = (2 * mu_x * mu_y + self.C1) * (2 * sigma_xy + self.C2)
            SSIM_d = (mu_x ** 2 + mu_y ** 2 + self.C1) * (sigma_x + sigma_y + self.C2)

            return torch.clamp((1 - SSIM_n / SSIM_d) / 2, 0, 1)

    return Namespace(**{name: value for name, value in locals().items() if name not in ("torch", "nn", "F")})


def networks(torch, nn, F, L):
    """The encoder (``ResnetEncoder``'s wrapper around small residual stages), ``DepthDecoder`` and ``PoseCNN``."""

    class BasicBlock(nn.Module):
        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                                nn.BatchNorm2d(planes))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    class ResnetEncoder(nn.Module):
        """Pytorch module for a resnet encoder
        """
        def __init__(self, num_layers=18, pretrained=False, num_input_images=1):
            super(ResnetEncoder, self).__init__()

            self.num_ch_enc = np.array(ENC_CHANNELS)
            c = ENC_CHANNELS
            self.conv1 = nn.Conv2d(3 * num_input_images, c[0], 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(c[0])
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = BasicBlock(c[0], c[1])
            self.layer2 = BasicBlock(c[1], c[2], 2)
            self.layer3 = BasicBlock(c[2], c[3], 2)
            self.layer4 = BasicBlock(c[3], c[4], 2)

        def forward(self, input_image):
            self.features = []
            x = (input_image - 0.45) / 0.225
            x = self.conv1(x)
            x = self.bn1(x)
            self.features.append(self.relu(x))
            self.features.append(self.layer1(self.maxpool(self.features[-1])))
            self.features.append(self.layer2(self.features[-1]))
            self.features.append(self.layer3(self.features[-1]))
            self.features.append(self.layer4(self.features[-1]))

            return self.features

    class DepthDecoder(nn.Module):
        def __init__(self, num_ch_enc, scales=range(4), num_output_channels=1, use_skips=True):
            super(DepthDecoder, self).__init__()

            self.num_output_channels = num_output_channels
            self.use_skips = use_skips
            self.upsample_mode = 'nearest'
            self.scales = scales

            self.num_ch_enc = num_ch_enc
            self.num_ch_dec = np.array(DEC_CHANNELS)

            # decoder
            self.convs = OrderedDict()
            for i in range(4, -1, -1):
                # upconv_0
                num_ch_in = self.num_ch_enc[-1] if i == 4 else self.num_ch_dec[i + 1]
                num_ch_out = self.num_ch_dec[i]
                self.convs[("upconv", i, 0)] = L.ConvBlock(num_ch_in, num_ch_out)

                # upconv_1
                num_ch_in = self.num_ch_dec[i]
                if self.use_skips and i > 0:
                    num_ch_in += self.num_ch_enc[i - 1]
                num_ch_out = self.num_ch_dec[i]
                self.convs[("upconv", i, 1)] = L.ConvBlock(num_ch_in, num_ch_out)

            for s in self.scales:
                self.convs[("dispconv", s)] = L.Conv3x3(self.num_ch_dec[s], self.num_output_channels)

            self.decoder = nn.ModuleList(list(self.convs.values()))
            self.sigmoid = nn.Sigmoid()

        def forward(self, input_features):
            self.outputs = {}

            # decoder
            x = input_features[-1]
            for i in range(4, -1, -1):
                x = self.convs[("upconv", i, 0)](x)
                x = [L.upsample(x)]
                if self.use_skips and i > 0:
                    x += [input_features[i - 1]]
                x = torch.cat(x, 1)
                x = self.convs[("upconv", i, 1)](x)
                if i in self.scales:
                    self.outputs[("disp", i)] = self.sigmoid(self.convs[("dispconv", i)](x))

            return self.outputs

    class PoseCNN(nn.Module):
        def __init__(self, num_input_frames):
            super(PoseCNN, self).__init__()

            self.num_input_frames = num_input_frames
            c = POSE_CHANNELS

            self.convs = {}
            self.convs[0] = nn.Conv2d(3 * num_input_frames, c[0], 7, 2, 3)
            self.convs[1] = nn.Conv2d(c[0], c[1], 5, 2, 2)
            self.convs[2] = nn.Conv2d(c[1], c[2], 3, 2, 1)
            self.convs[3] = nn.Conv2d(c[2], c[3], 3, 2, 1)
            self.convs[4] = nn.Conv2d(c[3], c[4], 3, 2, 1)
            self.convs[5] = nn.Conv2d(c[4], c[5], 3, 2, 1)
            self.convs[6] = nn.Conv2d(c[5], c[6], 3, 2, 1)

            self.pose_conv = nn.Conv2d(c[6], 6 * (num_input_frames - 1), 1)

            self.num_convs = len(self.convs)

            self.relu = nn.ReLU(True)

            self.net = nn.ModuleList(list(self.convs.values()))

        def forward(self, out):

            for i in range(self.num_convs):
                out = self.convs[i](out)
                out = self.relu(out)

            out = self.pose_conv(out)
            out = out.mean(3).mean(2)

            out = 0.01 * out.view(-1, self.num_input_frames - 1, 1, 6)

            axisangle = out[..., :3]
            translation = out[..., 3:]

            return axisangle, translation

    return ResnetEncoder, DepthDecoder, PoseCNN


def monodepth2(torch, nn, F):
    """The trainer's models in one ``nn.Module`` (``self.models`` is a dict of them there; ``parameters_to_train``
    gathers theirs), its ``backproject_depth``/``project_3d`` per scale, SSIM and the three trainer methods."""
    L = layers(torch, nn, F)
    ResnetEncoder, DepthDecoder, PoseCNN = networks(torch, nn, F, L)
    opt = Namespace(height=HEIGHT, width=WIDTH, scales=SCALES, frame_ids=FRAME_IDS, min_depth=0.1, max_depth=100.0,
                    v1_multiscale=False, disable_automasking=False, avg_reprojection=False, no_ssim=False,
                    disparity_smoothness=1e-3, pose_model_type="posecnn", batch_size=BATCH)

    class Trainer(nn.Module):
        def __init__(self):
            super().__init__()
            self.opt = opt
            self.num_scales = len(self.opt.scales)
            self.num_pose_frames = 2
            self.models = nn.ModuleDict()
            self.models["encoder"] = ResnetEncoder(18, False)
            self.models["depth"] = DepthDecoder(self.models["encoder"].num_ch_enc, self.opt.scales)
            self.models["pose"] = PoseCNN(self.num_pose_frames)
            self.ssim = L.SSIM()

            self.backproject_depth = {}
            self.project_3d = {}
            for scale in self.opt.scales:
                h = self.opt.height // (2 ** scale)
                w = self.opt.width // (2 ** scale)

                self.backproject_depth[scale] = L.BackprojectDepth(self.opt.batch_size, h, w)
                self.project_3d[scale] = L.Project3D(self.opt.batch_size, h, w)
            self.backprojections = nn.ModuleList(self.backproject_depth.values())

        def process_batch(self, inputs, tie_noise):
            features = self.models["encoder"](inputs["color_aug", 0, 0])
            outputs = self.models["depth"](features)
            outputs.update(self.predict_poses(inputs, features))
            self.generate_images_pred(inputs, outputs)
            losses = self.compute_losses(inputs, outputs, tie_noise)
            return outputs, losses

        def predict_poses(self, inputs, features):
            outputs = {}
            pose_feats = {f_i: inputs["color_aug", f_i, 0] for f_i in self.opt.frame_ids}
            for f_i in self.opt.frame_ids[1:]:
                if f_i != "s":
                    # To maintain ordering we always pass frames in temporal order
                    if f_i < 0:
                        pose_inputs = [pose_feats[f_i], pose_feats[0]]
                    else:
                        pose_inputs = [pose_feats[0], pose_feats[f_i]]
                    pose_inputs = torch.cat(pose_inputs, 1)

                    axisangle, translation = self.models["pose"](pose_inputs)
                    outputs[("axisangle", 0, f_i)] = axisangle
                    outputs[("translation", 0, f_i)] = translation

                    # Invert the matrix if the frame id is negative
                    outputs[("cam_T_cam", 0, f_i)] = L.transformation_from_parameters(
                        axisangle[:, 0], translation[:, 0], invert=(f_i < 0))
            return outputs

        def generate_images_pred(self, inputs, outputs):
            for scale in self.opt.scales:
                disp = outputs[("disp", scale)]
                if self.opt.v1_multiscale:
                    source_scale = scale
                else:
                    disp = F.interpolate(
                        disp, [self.opt.height, self.opt.width], mode="bilinear", align_corners=False)
                    source_scale = 0

                _, depth = L.disp_to_depth(disp, self.opt.min_depth, self.opt.max_depth)

                outputs[("depth", 0, scale)] = depth

                for i, frame_id in enumerate(self.opt.frame_ids[1:]):
                    T = outputs[("cam_T_cam", 0, frame_id)]

                    cam_points = self.backproject_depth[source_scale](
                        depth, inputs[("inv_K", source_scale)])
                    pix_coords = self.project_3d[source_scale](
                        cam_points, inputs[("K", source_scale)], T)

                    outputs[("sample", frame_id, scale)] = pix_coords

                    outputs[("color", frame_id, scale)] = F.grid_sample(
                        inputs[("color", frame_id, source_scale)],
                        outputs[("sample", frame_id, scale)],
                        padding_mode="border")

                    if not self.opt.disable_automasking:
                        outputs[("color_identity", frame_id, scale)] = \
                            inputs[("color", frame_id, source_scale)]

        def compute_reprojection_loss(self, pred, target):
            abs_diff = torch.abs(target - pred)
            l1_loss = abs_diff.mean(1, True)

            if self.opt.no_ssim:
                reprojection_loss = l1_loss
            else:
                ssim_loss = self.ssim(pred, target).mean(1, True)
                reprojection_loss = 0.85 * ssim_loss + 0.15 * l1_loss

            return reprojection_loss

        def compute_losses(self, inputs, outputs, tie_noise):
            losses = {}
            total_loss = 0

            for scale in self.opt.scales:
                loss = 0
                reprojection_losses = []

                source_scale = 0

                disp = outputs[("disp", scale)]
                color = inputs[("color", 0, scale)]
                target = inputs[("color", 0, source_scale)]

                for frame_id in self.opt.frame_ids[1:]:
                    pred = outputs[("color", frame_id, scale)]
                    reprojection_losses.append(self.compute_reprojection_loss(pred, target))

                reprojection_losses = torch.cat(reprojection_losses, 1)

                identity_reprojection_losses = []
                for frame_id in self.opt.frame_ids[1:]:
                    pred = inputs[("color", frame_id, source_scale)]
                    identity_reprojection_losses.append(
                        self.compute_reprojection_loss(pred, target))

                identity_reprojection_losses = torch.cat(identity_reprojection_losses, 1)

                # save both images, and do min all at once below
                identity_reprojection_loss = identity_reprojection_losses
                reprojection_loss = reprojection_losses

                # add random numbers to break ties
                identity_reprojection_loss += tie_noise[scale] * 0.00001

                combined = torch.cat((identity_reprojection_loss, reprojection_loss), dim=1)

                if combined.shape[1] == 1:
                    to_optimise = combined
                else:
                    to_optimise, idxs = torch.min(combined, dim=1)

                outputs["identity_selection/{}".format(scale)] = (
                    idxs > identity_reprojection_loss.shape[1] - 1).float()

                loss += to_optimise.mean()

                mean_disp = disp.mean(2, True).mean(3, True)
                norm_disp = disp / (mean_disp + 1e-7)
                smooth_loss = L.get_smooth_loss(norm_disp, color)

                loss += self.opt.disparity_smoothness * smooth_loss / (2 ** scale)
                total_loss += loss
                losses["loss/{}".format(scale)] = loss

            total_loss /= self.num_scales
            losses["loss"] = total_loss
            return losses

    return Trainer()


def kitti_inputs(torch, seed=0, dtype=np.float32):
    """A batch as ``KITTIDataset.__getitem__`` gives it: three frames (the middle one and its neighbours, shifted by a
    small camera motion), their pyramids (area resizes by 2), ``color_aug`` the colours unaugmented, and the scaled
    intrinsics ``K`` and ``inv_K`` (``np.linalg.pinv``) per scale, ``dtype`` (the reference's float32)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (BATCH, 3, HEIGHT, WIDTH + 4))
    base = (base + np.roll(base, 1, 3) + np.roll(base, 1, 2)) / 3  # some texture with structure
    inputs = {}
    for frame_id, shift in zip(FRAME_IDS, (2, 0, 4)):
        image = base[:, :, :, shift:shift + WIDTH]
        for scale in SCALES:
            inputs[("color", frame_id, scale)] = torch.tensor(image, dtype=torch.get_default_dtype())
            inputs[("color_aug", frame_id, scale)] = torch.tensor(image, dtype=torch.get_default_dtype())
            image = image.reshape(BATCH, 3, image.shape[2] // 2, 2, image.shape[3] // 2, 2).mean((3, 5))
    K0 = np.array([[0.58, 0, 0.5, 0], [0, 1.92, 0.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=dtype)
    for scale in SCALES:
        K = K0.copy()
        K[0, :] *= WIDTH // (2 ** scale)
        K[1, :] *= HEIGHT // (2 ** scale)
        inv_K = np.linalg.pinv(K)
        inputs[("K", scale)] = torch.from_numpy(np.repeat(K[None], BATCH, 0))
        inputs[("inv_K", scale)] = torch.from_numpy(np.repeat(inv_K[None], BATCH, 0))
    return inputs


def tie_noise_values(seed=0):
    rng = np.random.default_rng(seed + 100)
    return [rng.normal(size=(BATCH, 2, HEIGHT, WIDTH)) for _ in SCALES]
