"""A YOLOv5-style detector and its loss as ultralytics/yolov5 writes them (``models/yolo.py`` Detect with the anchors
as a buffer, ``utils/metrics.py`` bbox_iou with CIoU, ``utils/loss.py`` FocalLoss, smooth_BCE and ComputeLoss with its
grid-cell target assignment, ``utils/torch_utils.py`` ModelEMA), and torchvision's ``sigmoid_focal_loss`` (RetinaNet's)
in plain torch, shrunk to a few channels and written once for ``torch`` (``torch`` or ``kiln``)."""

from __future__ import annotations

import math
from copy import deepcopy


def yolo_program(torch, nn, F):
    def bbox_iou(box1, box2, xywh=True, GIoU=False, DIoU=False, CIoU=False, eps=1e-7):
        if xywh:  # transform from xywh to xyxy
            (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.chunk(4, -1), box2.chunk(4, -1)
            w1_, h1_, w2_, h2_ = w1 / 2, h1 / 2, w2 / 2, h2 / 2
            b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1_, x1 + w1_, y1 - h1_, y1 + h1_
            b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2_, x2 + w2_, y2 - h2_, y2 + h2_
        else:  # x1, y1, x2, y2 = box1
            b1_x1, b1_y1, b1_x2, b1_y2 = box1.chunk(4, -1)
            b2_x1, b2_y1, b2_x2, b2_y2 = box2.chunk(4, -1)
            w1, h1 = b1_x2 - b1_x1, (b1_y2 - b1_y1).clamp(eps)
            w2, h2 = b2_x2 - b2_x1, (b2_y2 - b2_y1).clamp(eps)
        inter = (b1_x2.minimum(b2_x2) - b1_x1.maximum(b2_x1)).clamp(0) * (
            b1_y2.minimum(b2_y2) - b1_y1.maximum(b2_y1)).clamp(0)
        union = w1 * h1 + w2 * h2 - inter + eps
        iou = inter / union
        if CIoU or DIoU or GIoU:
            cw = b1_x2.maximum(b2_x2) - b1_x1.minimum(b2_x1)  # convex (smallest enclosing box) width
            ch = b1_y2.maximum(b2_y2) - b1_y1.minimum(b2_y1)  # convex height
            if CIoU or DIoU:
                c2 = cw**2 + ch**2 + eps  # convex diagonal squared
                rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
                if CIoU:
                    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
                    with torch.no_grad():
                        alpha = v / (v - iou + (1 + eps))
                    return iou - (rho2 / c2 + v * alpha)  # CIoU
                return iou - rho2 / c2  # DIoU
            c_area = cw * ch + eps  # convex area
            return iou - (c_area - union) / c_area  # GIoU
        return iou

    def smooth_BCE(eps=0.1):
        return 1.0 - 0.5 * eps, 0.5 * eps

    def sigmoid_focal_loss(inputs, targets, alpha: float = 0.25, gamma: float = 2, reduction: str = "none"):
        p = torch.sigmoid(inputs)
        ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce_loss * ((1 - p_t) ** gamma)
        if alpha >= 0:
            alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
            loss = alpha_t * loss
        if reduction == "none":
            pass
        elif reduction == "mean":
            loss = loss.mean()
        elif reduction == "sum":
            loss = loss.sum()
        else:
            raise ValueError(f"Invalid Value for arg 'reduction': '{reduction} \n Supported reduction modes: 'none', 'mean', 'sum'")
        return loss

    class FocalLoss(nn.Module):
        def __init__(self, loss_fcn, gamma=1.5, alpha=0.25):
            super().__init__()
            self.loss_fcn = loss_fcn  # must be nn.BCEWithLogitsLoss()
            self.gamma = gamma
            self.alpha = alpha
            self.reduction = loss_fcn.reduction
            self.loss_fcn.reduction = "none"  # required to apply FL to each element

        def forward(self, pred, true):
            loss = self.loss_fcn(pred, true)
            pred_prob = torch.sigmoid(pred)  # prob from logits
            p_t = true * pred_prob + (1 - true) * (1 - pred_prob)
            alpha_factor = true * self.alpha + (1 - true) * (1 - self.alpha)
            modulating_factor = (1.0 - p_t) ** self.gamma
            loss *= alpha_factor * modulating_factor
            if self.reduction == "mean":
                return loss.mean()
            elif self.reduction == "sum":
                return loss.sum()
            return loss

    class TorchvisionFocal(nn.Module):
        """RetinaNet's classification loss in ComputeLoss's BCEcls slot: torchvision's sigmoid_focal_loss, mean."""

        def forward(self, pred, true):
            return sigmoid_focal_loss(pred, true, reduction="mean")

    class Detect(nn.Module):
        stride = None  # strides computed during build

        def __init__(self, nc=80, anchors=(), ch=()):
            super().__init__()
            self.nc = nc  # number of classes
            self.no = nc + 5  # number of outputs per anchor
            self.nl = len(anchors)  # number of detection layers
            self.na = len(anchors[0]) // 2  # number of anchors
            self.grid = [torch.empty(0) for _ in range(self.nl)]  # init grid
            self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]  # init anchor grid
            self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))  # shape(nl,na,2)
            self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)  # output conv

        def forward(self, x):
            z = []  # inference output
            for i in range(self.nl):
                x[i] = self.m[i](x[i])  # conv
                bs, _, ny, nx = x[i].shape  # x(bs,255,20,20) to x(bs,3,20,20,85)
                x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
                if not self.training:  # inference
                    if self.grid[i].shape[2:4] != x[i].shape[2:4]:
                        self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
                    xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
                    xy = (xy * 2 + self.grid[i]) * self.stride[i]  # xy
                    wh = (wh * 2) ** 2 * self.anchor_grid[i]  # wh
                    y = torch.cat((xy, wh, conf), 4)
                    z.append(y.view(bs, self.na * nx * ny, self.no))
            return x if self.training else (torch.cat(z, 1), x)

        def _make_grid(self, nx=20, ny=20, i=0):
            d = self.anchors[i].device
            t = self.anchors[i].dtype
            shape = 1, self.na, ny, nx, 2  # grid shape
            y, x = torch.arange(ny, device=d, dtype=t), torch.arange(nx, device=d, dtype=t)
            yv, xv = torch.meshgrid(y, x, indexing="ij")
            grid = torch.stack((xv, yv), 2).expand(shape) - 0.5  # add grid offset, i.e. y = 2.0 * x - 0.5
            anchor_grid = (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)
            return grid, anchor_grid

    class Conv(nn.Module):
        def __init__(self, c1, c2, k=3, s=1):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(c2)
            self.act = nn.SiLU()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class TinyYolo(nn.Module):
        def __init__(self, nc=3, anchors=((4, 5, 8, 10), (12, 10, 20, 24)), hyp=None):
            super().__init__()
            self.stem, self.p3, self.p4 = Conv(3, 8, 3, 2), Conv(8, 12, 3, 2), Conv(12, 16, 3, 2)
            self.model = nn.ModuleList([self.stem, self.p3, self.p4, Detect(nc, anchors, (12, 16))])
            m = self.model[-1]
            m.stride = torch.tensor([4.0, 8.0])
            m.anchors /= m.stride.view(-1, 1, 1)
            self.hyp = hyp

        def forward(self, x):
            p3 = self.p3(self.stem(x))
            return self.model[-1]([p3, self.p4(p3)])

    class ComputeLoss:
        sort_obj_iou = False

        def __init__(self, model, autobalance=False, cls_loss="bce"):
            device = next(model.parameters()).device  # get model device
            h = model.hyp  # hyperparameters
            BCEcls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([h["cls_pw"]], device=device))
            BCEobj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([h["obj_pw"]], device=device))
            self.cp, self.cn = smooth_BCE(eps=h.get("label_smoothing", 0.0))  # positive, negative BCE targets
            g = h["fl_gamma"]  # focal loss gamma
            if g > 0:
                BCEcls, BCEobj = FocalLoss(BCEcls, g), FocalLoss(BCEobj, g)
            if cls_loss == "torchvision focal":
                BCEcls = TorchvisionFocal()
            m = model.model[-1]  # Detect() module
            self.balance = {3: [4.0, 1.0, 0.4]}.get(m.nl, [4.0, 1.0, 0.25, 0.06, 0.02])  # P3-P7
            self.ssi = list(m.stride).index(16) if autobalance else 0  # stride 16 index
            self.BCEcls, self.BCEobj, self.gr, self.hyp, self.autobalance = BCEcls, BCEobj, 1.0, h, autobalance
            self.na = m.na  # number of anchors
            self.nc = m.nc  # number of classes
            self.nl = m.nl  # number of layers
            self.anchors = m.anchors
            self.device = device

        def __call__(self, p, targets):  # predictions, targets
            lcls = torch.zeros(1, device=self.device)  # class loss
            lbox = torch.zeros(1, device=self.device)  # box loss
            lobj = torch.zeros(1, device=self.device)  # object loss
            tcls, tbox, indices, anchors = self.build_targets(p, targets)  # targets
            for i, pi in enumerate(p):  # layer index, layer predictions
                b, a, gj, gi = indices[i]  # image, anchor, gridy, gridx
                tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype, device=self.device)  # target obj
                n = b.shape[0]  # number of targets
                if n:
                    pxy, pwh, _, pcls = pi[b, a, gj, gi].split((2, 2, 1, self.nc), 1)  # target-subset of predictions
                    pxy = pxy.sigmoid() * 2 - 0.5
                    pwh = (pwh.sigmoid() * 2) ** 2 * anchors[i]
                    pbox = torch.cat((pxy, pwh), 1)  # predicted box
                    iou = bbox_iou(pbox, tbox[i], CIoU=True).squeeze()  # iou(prediction, target)
                    lbox += (1.0 - iou).mean()  # iou loss
                    iou = iou.detach().clamp(0).type(tobj.dtype)
                    if self.sort_obj_iou:
                        j = iou.argsort()
                        b, a, gj, gi, iou = b[j], a[j], gj[j], gi[j], iou[j]
                    if self.gr < 1:
                        iou = (1.0 - self.gr) + self.gr * iou
                    tobj[b, a, gj, gi] = iou  # iou ratio
                    if self.nc > 1:  # cls loss (only if multiple classes)
                        t = torch.full_like(pcls, self.cn, device=self.device)  # targets
                        t[range(n), tcls[i]] = self.cp
                        lcls += self.BCEcls(pcls, t)  # BCE
                obji = self.BCEobj(pi[..., 4], tobj)
                lobj += obji * self.balance[i]  # obj loss
                if self.autobalance:
                    self.balance[i] = self.balance[i] * 0.9999 + 0.0001 / obji.detach().item()
            if self.autobalance:
                self.balance = [x / self.balance[self.ssi] for x in self.balance]
            lbox *= self.hyp["box"]
            lobj *= self.hyp["obj"]
            lcls *= self.hyp["cls"]
            bs = tobj.shape[0]  # batch size
            return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

        def build_targets(self, p, targets):
            na, nt = self.na, targets.shape[0]  # number of anchors, targets
            tcls, tbox, indices, anch = [], [], [], []
            gain = torch.ones(7, device=self.device)  # normalized to gridspace gain
            ai = torch.arange(na, device=self.device).float().view(na, 1).repeat(1, nt)  # same as .repeat_interleave(nt)
            targets = torch.cat((targets.repeat(na, 1, 1), ai[..., None]), 2)  # append anchor indices
            g = 0.5  # bias
            off = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=self.device).float() * g  # offsets
            for i in range(self.nl):
                anchors, shape = self.anchors[i], p[i].shape
                gain[2:6] = torch.tensor(shape)[[3, 2, 3, 2]]  # xyxy gain
                t = targets * gain  # shape(3,n,7)
                if nt:
                    r = t[..., 4:6] / anchors[:, None]  # wh ratio
                    j = torch.max(r, 1 / r).max(2)[0] < self.hyp["anchor_t"]  # compare
                    t = t[j]  # filter
                    gxy = t[:, 2:4]  # grid xy
                    gxi = gain[[2, 3]] - gxy  # inverse
                    j, k = ((gxy % 1 < g) & (gxy > 1)).T
                    l, m = ((gxi % 1 < g) & (gxi > 1)).T
                    j = torch.stack((torch.ones_like(j), j, k, l, m))
                    t = t.repeat((5, 1, 1))[j]
                    offsets = (torch.zeros_like(gxy)[None] + off[:, None])[j]
                else:
                    t = targets[0]
                    offsets = 0
                bc, gxy, gwh, a = t.chunk(4, 1)  # (image, class), grid xy, grid wh, anchors
                a, (b, c) = a.long().view(-1), bc.long().T  # anchors, image, class
                gij = (gxy - offsets).long()
                gi, gj = gij.T  # grid indices
                indices.append((b, a, gj.clamp_(0, shape[2] - 1), gi.clamp_(0, shape[3] - 1)))  # image, anchor, grid
                tbox.append(torch.cat((gxy - gij, gwh), 1))  # box
                anch.append(anchors[a])  # anchors
                tcls.append(c)  # class
            return tcls, tbox, indices, anch

    class ModelEMA:
        """yolov5's ModelEMA (the decay ramp) with timm's ModelEmaV2 update (``ema_v.copy_(...)`` over both
        state_dicts); yolov5's own ``if v.dtype.is_floating_point: v *= d; v += (1 - d) * msd[k].detach()`` is not
        run in kiln: see the test module's docstring."""

        def __init__(self, model, decay=0.9999, tau=2000, updates=0):
            self.ema = deepcopy(model).eval()  # FP32 EMA
            self.updates = updates  # number of EMA updates
            self.decay = lambda x: decay * (1 - math.exp(-x / tau))  # decay exponential ramp (to help early epochs)
            for p in self.ema.parameters():
                p.requires_grad_(False)

        @torch.no_grad()
        def update(self, model):
            self.updates += 1
            d = self.decay(self.updates)
            for ema_v, model_v in zip(self.ema.state_dict().values(), model.state_dict().values()):
                ema_v.copy_(d * ema_v + (1.0 - d) * model_v)

    def smart_optimizer(model, lr=0.01, momentum=0.9, decay=1e-5):
        g = [], [], []  # optimizer parameter groups
        bn = tuple(v for k, v in nn.__dict__.items() if "Norm" in k)  # normalization layers, i.e. BatchNorm2d()
        for v in model.modules():
            for p_name, p in v.named_parameters(recurse=0):
                if p_name == "bias":  # bias (no decay)
                    g[2].append(p)
                elif p_name == "weight" and isinstance(v, bn):  # weight (no decay)
                    g[1].append(p)
                else:
                    g[0].append(p)  # weight (with decay)
        optimizer = torch.optim.SGD(g[2], lr=lr, momentum=momentum, nesterov=True)
        optimizer.add_param_group({"params": g[0], "weight_decay": decay})  # add g0 with weight_decay
        optimizer.add_param_group({"params": g[1], "weight_decay": 0.0})  # add g1 (BatchNorm2d weights)
        return optimizer

    return TinyYolo, ComputeLoss, ModelEMA, smart_optimizer
