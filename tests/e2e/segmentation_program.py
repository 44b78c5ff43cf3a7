"""The dense-prediction programs of ``test_porting_probes_deeplab_pspnet_retina.py``, written once as their reference
code writes them (``torch`` is ``torch`` or ``kiln``): torchvision's DeepLabv3 (``models/segmentation/deeplabv3.py``,
``fcn.py``, ``_utils.py``) and its references/segmentation ``criterion`` and ``ConfusionMatrix``; hszhao/semseg's
PSPNet ``PPM`` and ``intersectionAndUnionGPU``; bermanmaxim/LovaszSoftmax's ``lovasz_losses.py``; kevinzakka's Dice
loss; and torchvision's RetinaNet pieces (``detection/anchor_utils.py``, ``_utils.py``, ``retinanet.py``,
``ops/boxes.py``, ``ops/focal_loss.py``, ``ops/giou_loss.py``), tiny."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace


def segmentation_program(torch, nn, F, channels=8, dropouts=(0.0, 0.0)):
    """DeepLabv3 (ASPP, the FCN auxiliary head, ``IntermediateLayerGetter``) and PSPNet's head on a tiny backbone;
    ``dropouts`` are the (ASPP projection, FCN head / PSPNet cls) probabilities (torchvision: 0.5, 0.1)."""

    class IntermediateLayerGetter(nn.ModuleDict):
        _version = 2

        def __init__(self, model, return_layers):
            if not set(return_layers).issubset([name for name, _ in model.named_children()]):
                raise ValueError("return_layers are not present in model")
            orig_return_layers = return_layers
            return_layers = {str(k): str(v) for k, v in return_layers.items()}
            layers = OrderedDict()
            for name, module in model.named_children():
                layers[name] = module
                if name in return_layers:
                    del return_layers[name]
                if not return_layers:
                    break
            super().__init__(layers)
            self.return_layers = orig_return_layers

        def forward(self, x):
            out = OrderedDict()
            for name, module in self.items():
                x = module(x)
                if name in self.return_layers:
                    out_name = self.return_layers[name]
                    out[out_name] = x
            return out

    def conv_bn_relu(in_channels, out_channels, stride=1, dilation=1, padding=1):
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=padding,
                                       dilation=dilation, bias=False),
                             nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    class TinyBackbone(nn.Module):
        """A ResNet's named stages (``layer3`` the aux features, ``layer4`` dilated as replace_stride_with_dilation)."""

        def __init__(self, stem_padding=1):
            super().__init__()
            self.conv1 = conv_bn_relu(3, channels, stride=2, padding=stem_padding)
            self.layer1 = conv_bn_relu(channels, channels)
            self.layer3 = conv_bn_relu(channels, 2 * channels, dilation=2, padding=2)
            self.layer4 = conv_bn_relu(2 * channels, 2 * channels, dilation=2, padding=2)
            self.fc = nn.Linear(2 * channels, 10)

    class _SimpleSegmentationModel(nn.Module):
        __constants__ = ["aux_classifier"]

        def __init__(self, backbone, classifier, aux_classifier=None):
            super().__init__()
            self.backbone = backbone
            self.classifier = classifier
            self.aux_classifier = aux_classifier

        def forward(self, x):
            input_shape = x.shape[-2:]
            # contract: features is a dict of tensors
            features = self.backbone(x)

            result = OrderedDict()
            x = features["out"]
            x = self.classifier(x)
            x = F.interpolate(x, size=input_shape, mode="bilinear", align_corners=False)
            result["out"] = x

            if self.aux_classifier is not None:
                x = features["aux"]
                x = self.aux_classifier(x)
                x = F.interpolate(x, size=input_shape, mode="bilinear", align_corners=False)
                result["aux"] = x

            return result

    class DeepLabV3(_SimpleSegmentationModel):
        pass

    class DeepLabHead(nn.Sequential):
        def __init__(self, in_channels, num_classes, atrous_rates=(12, 24, 36)):
            super().__init__(
                ASPP(in_channels, atrous_rates, out_channels=channels),
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
                nn.Conv2d(channels, num_classes, 1),
            )

    class ASPPConv(nn.Sequential):
        def __init__(self, in_channels, out_channels, dilation):
            modules = [
                nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
            ]
            super().__init__(*modules)

    class ASPPPooling(nn.Sequential):
        def __init__(self, in_channels, out_channels):
            super().__init__(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
            )

        def forward(self, x):
            size = x.shape[-2:]
            for mod in self:
                x = mod(x)
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    class ASPP(nn.Module):
        def __init__(self, in_channels, atrous_rates, out_channels=256):
            super().__init__()
            modules = []
            modules.append(
                nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                              nn.ReLU())
            )

            rates = tuple(atrous_rates)
            for rate in rates:
                modules.append(ASPPConv(in_channels, out_channels, rate))

            modules.append(ASPPPooling(in_channels, out_channels))

            self.convs = nn.ModuleList(modules)

            self.project = nn.Sequential(
                nn.Conv2d(len(self.convs) * out_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
                nn.Dropout(dropouts[0]),
            )

        def forward(self, x):
            _res = []
            for conv in self.convs:
                _res.append(conv(x))
            res = torch.cat(_res, dim=1)
            return self.project(res)

    class FCNHead(nn.Sequential):
        def __init__(self, in_channels, channels):
            inter_channels = in_channels // 4
            layers = [
                nn.Conv2d(in_channels, inter_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(inter_channels),
                nn.ReLU(),
                nn.Dropout(dropouts[1]),
                nn.Conv2d(inter_channels, channels, 1),
            ]
            super().__init__(*layers)

    def deeplabv3(num_classes, aux=True, atrous_rates=(1, 2, 3)):
        """torchvision's ``_deeplabv3_resnet`` (the rates scaled to the tiny map)."""
        return_layers = {"layer4": "out"}
        if aux:
            return_layers["layer3"] = "aux"
        backbone = IntermediateLayerGetter(TinyBackbone(), return_layers=return_layers)
        aux_classifier = FCNHead(2 * channels, num_classes) if aux else None
        classifier = DeepLabHead(2 * channels, num_classes, atrous_rates)
        return DeepLabV3(backbone, classifier, aux_classifier)

    class PPM(nn.Module):
        def __init__(self, in_dim, reduction_dim, bins):
            super(PPM, self).__init__()
            self.features = []
            for bin in bins:
                self.features.append(nn.Sequential(
                    nn.AdaptiveAvgPool2d(bin),
                    nn.Conv2d(in_dim, reduction_dim, kernel_size=1, bias=False),
                    nn.BatchNorm2d(reduction_dim),
                    nn.ReLU(inplace=True)
                ))
            self.features = nn.ModuleList(self.features)

        def forward(self, x):
            x_size = x.size()
            out = [x]
            for f in self.features:
                out.append(F.interpolate(f(x), x_size[2:], mode='bilinear', align_corners=True))
            return torch.cat(out, 1)

    class PSPNet(nn.Module):
        """semseg's PSPNet (zoom_factor 8 on a 17x17 input; the stem's padding 2 makes the PPM's map 10x10, which
        bins 3 and 6 do not divide); its criterion is given to the loss step as semseg's train.py does."""

        def __init__(self, bins=(1, 2, 3, 6), classes=3, zoom_factor=8, use_ppm=True):
            super(PSPNet, self).__init__()
            self.zoom_factor = zoom_factor
            self.use_ppm = use_ppm
            backbone = TinyBackbone(stem_padding=2)
            self.layer0, self.layer1 = backbone.conv1, backbone.layer1
            self.layer3, self.layer4 = backbone.layer3, backbone.layer4
            fea_dim = 2 * channels
            if use_ppm:
                self.ppm = PPM(fea_dim, int(fea_dim / len(bins)), bins)
                fea_dim *= 2
            self.cls = nn.Sequential(
                nn.Conv2d(fea_dim, channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.Dropout2d(p=dropouts[1]),
                nn.Conv2d(channels, classes, kernel_size=1)
            )
            self.aux = nn.Sequential(
                nn.Conv2d(2 * channels, channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.Dropout2d(p=dropouts[1]),
                nn.Conv2d(channels, classes, kernel_size=1)
            )

        def forward(self, x):
            x_size = x.size()
            assert (x_size[2]-1) % 8 == 0 and (x_size[3]-1) % 8 == 0
            h = int((x_size[2] - 1) / 8 * self.zoom_factor + 1)
            w = int((x_size[3] - 1) / 8 * self.zoom_factor + 1)

            x = self.layer0(x)
            x = self.layer1(x)
            x_tmp = self.layer3(x)
            x = self.layer4(x_tmp)
            if self.use_ppm:
                x = self.ppm(x)
            x = self.cls(x)
            if self.zoom_factor != 1:
                x = F.interpolate(x, size=(h, w), mode='bilinear', align_corners=True)
            if self.training:
                aux = self.aux(x_tmp)
                if self.zoom_factor != 1:
                    aux = F.interpolate(aux, size=(h, w), mode='bilinear', align_corners=True)
                return x, aux
            return x

    return SimpleNamespace(deeplabv3=deeplabv3, PSPNet=PSPNet)


def segmentation_metrics(torch):
    """torchvision references/segmentation's ``ConfusionMatrix`` and semseg's ``intersectionAndUnionGPU``."""

    class ConfusionMatrix:
        def __init__(self, num_classes):
            self.num_classes = num_classes
            self.mat = None

        def update(self, a, b):
            n = self.num_classes
            if self.mat is None:
                self.mat = torch.zeros((n, n), dtype=torch.int64, device=a.device)
            with torch.inference_mode():
                k = (a >= 0) & (a < n)
                inds = n * a[k].to(torch.int64) + b[k]
                self.mat += torch.bincount(inds, minlength=n**2).reshape(n, n)

        def compute(self):
            h = self.mat.float()
            acc_global = torch.diag(h).sum() / h.sum()
            acc = torch.diag(h) / h.sum(1)
            iu = torch.diag(h) / (h.sum(1) + h.sum(0) - torch.diag(h))
            return acc_global, acc, iu

    def intersectionAndUnionGPU(output, target, K, ignore_index=255):
        # 'K' classes, output and target sizes are N or N * L or N * H * W, each value in range 0 to K - 1.
        assert (output.dim() in [1, 2, 3])
        assert output.shape == target.shape
        output = output.view(-1)
        target = target.view(-1)
        output[target == ignore_index] = ignore_index
        intersection = output[output == target]
        area_intersection = torch.histc(intersection, bins=K, min=0, max=K-1)
        area_output = torch.histc(output, bins=K, min=0, max=K-1)
        area_target = torch.histc(target, bins=K, min=0, max=K-1)
        area_union = area_output + area_target - area_intersection
        return area_intersection, area_union, area_target

    return ConfusionMatrix, intersectionAndUnionGPU


def segmentation_losses(torch, F, reference_float=True):
    """bermanmaxim/LovaszSoftmax's ``lovasz_losses.py`` (``Variable`` and all) and kevinzakka's ``dice_loss``.
    ``reference_float`` False reads the reference's ``.float()`` of the labels as ``.to(torch.get_default_dtype())``,
    the change a float64 run needs (torch.dot refuses a float64 error vector dotted with a float32 gradient)."""
    Variable = torch.autograd.Variable

    def as_float(t):
        return t.float() if reference_float else t.to(torch.get_default_dtype())

    def lovasz_grad(gt_sorted):
        p = len(gt_sorted)
        gts = gt_sorted.sum()
        intersection = gts - as_float(gt_sorted).cumsum(0)
        union = gts + as_float(1 - gt_sorted).cumsum(0)
        jaccard = 1. - intersection / union
        if p > 1:  # cover 1-pixel case
            jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
        return jaccard

    def lovasz_hinge(logits, labels, per_image=True, ignore=None):
        if per_image:
            loss = mean(lovasz_hinge_flat(*flatten_binary_scores(log.unsqueeze(0), lab.unsqueeze(0), ignore))
                        for log, lab in zip(logits, labels))
        else:
            loss = lovasz_hinge_flat(*flatten_binary_scores(logits, labels, ignore))
        return loss

    def lovasz_hinge_flat(logits, labels):
        if len(labels) == 0:
            # only void pixels, the gradients should be 0
            return logits.sum() * 0.
        signs = 2. * as_float(labels) - 1.
        errors = (1. - logits * Variable(signs))
        errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
        perm = perm.data
        gt_sorted = labels[perm]
        grad = lovasz_grad(gt_sorted)
        loss = torch.dot(F.relu(errors_sorted), Variable(grad))
        return loss

    def flatten_binary_scores(scores, labels, ignore=None):
        scores = scores.view(-1)
        labels = labels.view(-1)
        if ignore is None:
            return scores, labels
        valid = (labels != ignore)
        vscores = scores[valid]
        vlabels = labels[valid]
        return vscores, vlabels

    def lovasz_softmax(probas, labels, classes='present', per_image=False, ignore=None):
        if per_image:
            loss = mean(lovasz_softmax_flat(*flatten_probas(prob.unsqueeze(0), lab.unsqueeze(0), ignore),
                                            classes=classes)
                        for prob, lab in zip(probas, labels))
        else:
            loss = lovasz_softmax_flat(*flatten_probas(probas, labels, ignore), classes=classes)
        return loss

    def lovasz_softmax_flat(probas, labels, classes='present'):
        if probas.numel() == 0:
            # only void pixels, the gradients should be 0
            return probas * 0.
        C = probas.size(1)
        losses = []
        class_to_sum = list(range(C)) if classes in ['all', 'present'] else classes
        for c in class_to_sum:
            fg = as_float(labels == c)  # foreground for class c
            if (classes == 'present' and fg.sum() == 0):
                continue
            if C == 1:
                if len(classes) > 1:
                    raise ValueError('Sigmoid output possible only with 1 class')
                class_pred = probas[:, 0]
            else:
                class_pred = probas[:, c]
            errors = (Variable(fg) - class_pred).abs()
            errors_sorted, perm = torch.sort(errors, 0, descending=True)
            perm = perm.data
            fg_sorted = fg[perm]
            losses.append(torch.dot(errors_sorted, Variable(lovasz_grad(fg_sorted))))
        return mean(losses)

    def flatten_probas(probas, labels, ignore=None):
        if probas.dim() == 3:
            # assumes output of a sigmoid layer
            B, H, W = probas.size()
            probas = probas.view(B, 1, H, W)
        B, C, H, W = probas.size()
        probas = probas.permute(0, 2, 3, 1).contiguous().view(-1, C)  # B * H * W, C = P, C
        labels = labels.view(-1)
        if ignore is None:
            return probas, labels
        valid = (labels != ignore)
        vprobas = probas[valid.nonzero().squeeze()]
        vlabels = labels[valid]
        return vprobas, vlabels

    def mean(values, empty=0):
        """nanmean compatible with generators (``ignore_nan`` left out)."""
        values = iter(values)
        try:
            n = 1
            acc = next(values)
        except StopIteration:
            if empty == 'raise':
                raise ValueError('Empty mean')
            return empty
        for n, v in enumerate(values, 2):
            acc += v
        if n == 1:
            return acc
        return acc / n

    def dice_loss(true, logits, eps=1e-7):
        num_classes = logits.shape[1]
        true_1_hot = torch.eye(num_classes)[true.squeeze(1)]
        true_1_hot = true_1_hot.permute(0, 3, 1, 2).float()
        probas = F.softmax(logits, dim=1)
        true_1_hot = true_1_hot.type(logits.type())
        dims = (0,) + tuple(range(2, true.ndimension()))
        intersection = torch.sum(probas * true_1_hot, dims)
        cardinality = torch.sum(probas + true_1_hot, dims)
        dice_loss = (2. * intersection / (cardinality + eps)).mean()
        return (1 - dice_loss)

    return SimpleNamespace(lovasz_hinge=lovasz_hinge, lovasz_softmax=lovasz_softmax, dice_loss=dice_loss)
