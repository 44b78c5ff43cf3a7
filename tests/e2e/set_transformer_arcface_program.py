"""juho-lee/set_transformer's modules and mixture of Gaussians, arcface-pytorch's margin heads and focal loss, and the
online triplet-mining losses, written once for ``torch`` being torch or kiln: the programs of
``test_porting_probes_ntm_settransformer_arcface.py``, whose docstring says what it covers."""

from __future__ import annotations

import math


# --- set_transformer --------------------------------------------------------------------------------------------------

SET_BATCH, SET_DIM, SET_HEADS, SET_INDUCING = 4, 8, 2, 3


def set_transformer(torch, nn, F, isab=True):
    """modules.py (MAB, SAB, ISAB, PMA) as juho-lee/set_transformer writes it; the max-regression demo's
    ``SmallSetTransformer`` (SAB, SAB, PMA, Linear; ``isab`` puts an ISAB with inducing points first and LayerNorms
    in, as models.py's ``SetTransformer(ln=True)``)."""

    class MAB(nn.Module):
        def __init__(self, dim_Q, dim_K, dim_V, num_heads, ln=False):
            super(MAB, self).__init__()
            self.dim_V = dim_V
            self.num_heads = num_heads
            self.fc_q = nn.Linear(dim_Q, dim_V)
            self.fc_k = nn.Linear(dim_K, dim_V)
            self.fc_v = nn.Linear(dim_K, dim_V)
            if ln:
                self.ln0 = nn.LayerNorm(dim_V)
                self.ln1 = nn.LayerNorm(dim_V)
            self.fc_o = nn.Linear(dim_V, dim_V)

        def forward(self, Q, K):
            Q = self.fc_q(Q)
            K, V = self.fc_k(K), self.fc_v(K)

            dim_split = self.dim_V // self.num_heads
            Q_ = torch.cat(Q.split(dim_split, 2), 0)
            K_ = torch.cat(K.split(dim_split, 2), 0)
            V_ = torch.cat(V.split(dim_split, 2), 0)

            A = torch.softmax(Q_.bmm(K_.transpose(1, 2)) / math.sqrt(self.dim_V), 2)
            O = torch.cat((Q_ + A.bmm(V_)).split(Q.size(0), 0), 2)  # noqa: E741 (as modules.py writes it)
            O = O if getattr(self, 'ln0', None) is None else self.ln0(O)  # noqa: E741
            O = O + F.relu(self.fc_o(O))  # noqa: E741
            O = O if getattr(self, 'ln1', None) is None else self.ln1(O)  # noqa: E741
            return O

    class SAB(nn.Module):
        def __init__(self, dim_in, dim_out, num_heads, ln=False):
            super(SAB, self).__init__()
            self.mab = MAB(dim_in, dim_in, dim_out, num_heads, ln=ln)

        def forward(self, X):
            return self.mab(X, X)

    class ISAB(nn.Module):
        def __init__(self, dim_in, dim_out, num_heads, num_inds, ln=False):
            super(ISAB, self).__init__()
            self.I = nn.Parameter(torch.Tensor(1, num_inds, dim_out))
            nn.init.xavier_uniform_(self.I)
            self.mab0 = MAB(dim_out, dim_in, dim_out, num_heads, ln=ln)
            self.mab1 = MAB(dim_in, dim_out, dim_out, num_heads, ln=ln)

        def forward(self, X):
            H = self.mab0(self.I.repeat(X.size(0), 1, 1), X)
            return self.mab1(X, H)

    class PMA(nn.Module):
        def __init__(self, dim, num_heads, num_seeds, ln=False):
            super(PMA, self).__init__()
            self.S = nn.Parameter(torch.Tensor(1, num_seeds, dim))
            nn.init.xavier_uniform_(self.S)
            self.mab = MAB(dim, dim, dim, num_heads, ln=ln)

        def forward(self, X):
            return self.mab(self.S.repeat(X.size(0), 1, 1), X)

    class SmallSetTransformer(nn.Module):
        def __init__(self,):
            super().__init__()
            first = (ISAB(1, SET_DIM, SET_HEADS, SET_INDUCING, ln=True) if isab
                     else SAB(dim_in=1, dim_out=SET_DIM, num_heads=SET_HEADS))
            self.enc = nn.Sequential(
                first,
                SAB(dim_in=SET_DIM, dim_out=SET_DIM, num_heads=SET_HEADS, ln=isab),
            )
            self.dec = nn.Sequential(
                PMA(dim=SET_DIM, num_heads=SET_HEADS, num_seeds=1, ln=isab),
                nn.Linear(in_features=SET_DIM, out_features=1),
            )

        def forward(self, x):
            x = self.enc(x)
            x = self.dec(x)
            return x.squeeze(-1)

    return SmallSetTransformer()


def mixture_of_mvns(torch, F):
    """mixture_of_mvns.py and mvn_diag.py as the repository writes them (``plot`` left out): sampling by
    ``Dirichlet(torch.ones(K)).sample(torch.Size([B]))`` and ``Categorical(probs=pi).sample(torch.Size([N]))``, the
    diagonal Gaussian's ``log_prob`` by broadcasting, ``ll.logsumexp(-1).mean()``, ``parse`` of the network output."""
    distributions = torch.distributions  # the file's ``from torch.distributions import (Dirichlet, Categorical)``

    class MultivariateNormal(object):
        def __init__(self, dim):
            self.dim = dim

    class MixtureOfMVNs(object):
        def __init__(self, mvn):
            self.mvn = mvn

        def sample(self, B, N, K, return_gt=False):
            device = 'cpu' if not torch.cuda.is_available() \
                else torch.cuda.current_device()
            pi = distributions.Dirichlet(torch.ones(K)).sample(torch.Size([B])).to(device)
            labels = distributions.Categorical(probs=pi).sample(torch.Size([N])).to(device)
            labels = labels.transpose(0, 1).contiguous()

            X, params = self.mvn.sample(B, K, labels)
            if return_gt:
                return X, labels, pi, params
            else:
                return X

        def log_prob(self, X, pi, params, return_labels=False):
            ll = self.mvn.log_prob(X, params)
            ll = ll + (pi + 1e-10).log().unsqueeze(-2)
            if return_labels:
                labels = ll.argmax(-1)
                return ll.logsumexp(-1).mean(), labels
            else:
                return ll.logsumexp(-1).mean()

        def parse(self, raw):
            return self.mvn.parse(raw)

    class MultivariateNormalDiag(MultivariateNormal):
        def __init__(self, dim):
            super(MultivariateNormalDiag, self).__init__(dim)

        def sample(self, B, K, labels):
            N = labels.shape[-1]
            device = labels.device
            mu = -4 + 8*torch.rand(B, K, self.dim).to(device)
            sigma = 0.3*torch.ones(B, K, self.dim).to(device)
            eps = torch.randn(B, N, self.dim).to(device)

            rlabels = labels.unsqueeze(-1).repeat(1, 1, self.dim)
            X = torch.gather(mu, 1, rlabels) + \
                eps * torch.gather(sigma, 1, rlabels)
            return X, (mu, sigma)

        def log_prob(self, X, params):
            mu, sigma = params
            X = X.unsqueeze(2)
            mu = mu.unsqueeze(1)
            sigma = sigma.unsqueeze(1)
            diff = X - mu
            ll = -0.5*math.log(2*math.pi) - sigma.log() - 0.5*(diff.pow(2)/sigma.pow(2))
            return ll.sum(-1)

        def stats(self, params):
            mu, sigma = params
            I = torch.eye(self.dim)[(None,)*(len(sigma.shape)-1)].to(sigma.device)  # noqa: E741 (as mvn_diag.py)
            cov = sigma.pow(2).unsqueeze(-1) * I
            return mu, cov

        def parse(self, raw):
            pi = torch.softmax(raw[..., 0], -1)
            mu = raw[..., 1:1+self.dim]
            sigma = F.softplus(raw[..., 1+self.dim:])
            return pi, (mu, sigma)

    mvn = MultivariateNormalDiag(2)
    return mvn, MixtureOfMVNs(mvn)


MOG_K, MOG_B = 2, 3


def set_transformer_of_models_py(torch, nn, F):
    small = set_transformer(torch, nn, F)  # the module classes, from the blocks of the max-regression net
    ISAB, PMA, SAB = type(small.enc[0]), type(small.dec[0]), type(small.enc[1])

    class SetTransformer(nn.Module):
        def __init__(self, dim_input, num_outputs, dim_output,
                     num_inds=32, dim_hidden=128, num_heads=4, ln=False):
            super(SetTransformer, self).__init__()
            self.enc = nn.Sequential(
                ISAB(dim_input, dim_hidden, num_heads, num_inds, ln=ln),
                ISAB(dim_hidden, dim_hidden, num_heads, num_inds, ln=ln))
            self.dec = nn.Sequential(
                PMA(dim_hidden, num_heads, num_outputs, ln=ln),
                SAB(dim_hidden, dim_hidden, num_heads, ln=ln),
                SAB(dim_hidden, dim_hidden, num_heads, ln=ln),
                nn.Linear(dim_hidden, dim_output))

        def forward(self, X):
            return self.dec(self.enc(X))

    return SetTransformer


# --- arcface-pytorch (models/metrics.py, models/focal_loss.py) --------------------------------------------------------

FEATURES, EMBEDDING, CLASSES, METRIC_BATCH = 6, 5, 4, 8


def margin_heads(torch, nn, F, weight_type):
    """ronghuaiyang/arcface-pytorch's ``ArcMarginProduct`` and ``AddMarginProduct`` (``device='cuda'`` of the one-hot
    left out); ``weight_type`` is the reference's ``torch.FloatTensor`` or, in the float64 runs,
    ``torch.DoubleTensor``."""
    Parameter = nn.Parameter

    class ArcMarginProduct(nn.Module):
        def __init__(self, in_features, out_features, s=30.0, m=0.50, easy_margin=False):
            super(ArcMarginProduct, self).__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.s = s
            self.m = m
            self.weight = Parameter(weight_type(out_features, in_features))
            nn.init.xavier_uniform_(self.weight)

            self.easy_margin = easy_margin
            self.cos_m = math.cos(m)
            self.sin_m = math.sin(m)
            self.th = math.cos(math.pi - m)
            self.mm = math.sin(math.pi - m) * m

        def forward(self, input, label):
            # --------------------------- cos(theta) & phi(theta) ---------------------------
            cosine = F.linear(F.normalize(input), F.normalize(self.weight))
            sine = torch.sqrt((1.0 - torch.pow(cosine, 2)).clamp(0, 1))
            phi = cosine * self.cos_m - sine * self.sin_m
            if self.easy_margin:
                phi = torch.where(cosine > 0, phi, cosine)
            else:
                phi = torch.where(cosine > self.th, phi, cosine - self.mm)
            # --------------------------- convert label to one-hot ---------------------------
            one_hot = torch.zeros(cosine.size())
            one_hot.scatter_(1, label.view(-1, 1).long(), 1)
            # -------------torch.where(out_i = {x_i if condition_i else y_i) -------------
            # you can use torch.where if your torch.__version__ is 0.4
            output = (one_hot * phi) + ((1.0 - one_hot) * cosine)
            output *= self.s
            return output

    class AddMarginProduct(nn.Module):
        def __init__(self, in_features, out_features, s=30.0, m=0.40):
            super(AddMarginProduct, self).__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.s = s
            self.m = m
            self.weight = Parameter(weight_type(out_features, in_features))
            nn.init.xavier_uniform_(self.weight)

        def forward(self, input, label):
            cosine = F.linear(F.normalize(input), F.normalize(self.weight))
            phi = cosine - self.m
            one_hot = torch.zeros(cosine.size())
            one_hot.scatter_(1, label.view(-1, 1).long(), 1)
            output = (one_hot * phi) + ((1.0 - one_hot) * cosine)
            output *= self.s
            return output

    class SphereProduct(nn.Module):
        def __init__(self, in_features, out_features, m=4):
            super(SphereProduct, self).__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.m = m
            self.base = 1000.0
            self.gamma = 0.12
            self.power = 1
            self.LambdaMin = 5.0
            self.iter = 0
            self.weight = Parameter(weight_type(out_features, in_features))
            nn.init.xavier_uniform(self.weight)

            # duplication formula
            self.mlambda = [
                lambda x: x ** 0,
                lambda x: x ** 1,
                lambda x: 2 * x ** 2 - 1,
                lambda x: 4 * x ** 3 - 3 * x,
                lambda x: 8 * x ** 4 - 8 * x ** 2 + 1,
                lambda x: 16 * x ** 5 - 20 * x ** 3 + 5 * x
            ]

        def forward(self, input, label):
            # lambda = max(lambda_min,base*(1+gamma*iteration)^(-power))
            self.iter += 1
            self.lamb = max(self.LambdaMin, self.base * (1 + self.gamma * self.iter) ** (-1 * self.power))

            # --------------------------- cos(theta) & phi(theta) ---------------------------
            cos_theta = F.linear(F.normalize(input), F.normalize(self.weight))
            cos_theta = cos_theta.clamp(-1, 1)
            cos_m_theta = self.mlambda[self.m](cos_theta)
            theta = cos_theta.data.acos()
            k = (self.m * theta / 3.14159265).floor()
            phi_theta = ((-1.0) ** k) * cos_m_theta - 2 * k
            NormOfFeature = torch.norm(input, 2, 1)

            # --------------------------- convert label to one-hot ---------------------------
            one_hot = torch.zeros(cos_theta.size())
            one_hot = one_hot.cuda() if cos_theta.is_cuda else one_hot
            one_hot.scatter_(1, label.view(-1, 1), 1)

            # --------------------------- Calculate output ---------------------------
            output = (one_hot * (phi_theta - cos_theta) / (1 + self.lamb)) + cos_theta
            output *= NormOfFeature.view(-1, 1)

            return output

    return ArcMarginProduct, AddMarginProduct, SphereProduct


def focal_loss(torch, nn):
    """arcface-pytorch's models/focal_loss.py (train.py's ``FocalLoss(gamma=2)``)."""

    class FocalLoss(nn.Module):

        def __init__(self, gamma=0, eps=1e-7):
            super(FocalLoss, self).__init__()
            self.gamma = gamma
            self.eps = eps
            self.ce = torch.nn.CrossEntropyLoss()

        def forward(self, input, target):
            logp = self.ce(input, target)
            p = torch.exp(-logp)
            loss = (1 - p) ** self.gamma * logp
            return loss.mean()

    return FocalLoss(gamma=2)


def metric_model(torch, nn, F, head="arc", easy_margin=False, weight_type=None):
    """A tiny embedding net and the margin head, as arcface-pytorch's train.py pairs ``model`` and ``metric_fc``."""
    ArcMarginProduct, AddMarginProduct, SphereProduct = margin_heads(torch, nn, F, weight_type or torch.DoubleTensor)

    class Embedder(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Linear(FEATURES, 16), nn.PReLU(), nn.Linear(16, EMBEDDING))
            self.bn = nn.BatchNorm1d(EMBEDDING)
            if head == "arc":
                self.metric_fc = ArcMarginProduct(EMBEDDING, CLASSES, s=30, m=0.5, easy_margin=easy_margin)
            elif head == "sphere":
                self.metric_fc = SphereProduct(EMBEDDING, CLASSES, m=4)
            else:
                self.metric_fc = AddMarginProduct(EMBEDDING, CLASSES, s=30, m=0.35)

        def forward(self, x):
            return self.bn(self.features(x))

    return Embedder()


# --- online triplet mining --------------------------------------------------------------------------------------------


def online_triplet_losses(torch, variant):
    """NegatioN/OnlineMiningTripletLoss's ``batch_hard_triplet_loss`` (the expanded-form distances, masks from
    ``labels.unsqueeze(0) == labels.unsqueeze(1)``, ``distances[distances < 0] = 0``, ``tl[tl < 0] = 0``); the
    ``cdist`` form with ``masked_fill`` as other repositories write it; ``nn.TripletMarginLoss`` on mined triplets."""

    def _pairwise_distances(embeddings, squared=False):
        dot_product = torch.matmul(embeddings, embeddings.t())
        square_norm = torch.diag(dot_product)
        distances = square_norm.unsqueeze(0) - 2.0 * dot_product + square_norm.unsqueeze(1)
        distances[distances < 0] = 0
        if not squared:
            mask = distances.eq(0).float()
            distances = distances + mask * 1e-16
            distances = (1.0 - mask) * torch.sqrt(distances)
        return distances

    def _get_anchor_positive_triplet_mask(labels):
        device = torch.device("cuda:0" if labels.is_cuda else "cpu")
        indices_equal = torch.eye(labels.size(0), device=device).bool()
        indices_not_equal = ~indices_equal
        labels_equal = labels.unsqueeze(0) == labels.unsqueeze(1)
        return labels_equal & indices_not_equal

    def _get_anchor_negative_triplet_mask(labels):
        return ~(labels.unsqueeze(0) == labels.unsqueeze(1))

    def batch_hard_triplet_loss(labels, embeddings, margin, squared=False):
        pairwise_dist = _pairwise_distances(embeddings, squared=squared)
        mask_anchor_positive = _get_anchor_positive_triplet_mask(labels).float()
        anchor_positive_dist = mask_anchor_positive * pairwise_dist
        hardest_positive_dist, _ = anchor_positive_dist.max(1, keepdim=True)
        mask_anchor_negative = _get_anchor_negative_triplet_mask(labels).float()
        max_anchor_negative_dist, _ = pairwise_dist.max(1, keepdim=True)
        anchor_negative_dist = pairwise_dist + max_anchor_negative_dist * (1.0 - mask_anchor_negative)
        hardest_negative_dist, _ = anchor_negative_dist.min(1, keepdim=True)
        tl = hardest_positive_dist - hardest_negative_dist + margin
        tl[tl < 0] = 0
        triplet_loss = tl.mean()
        return triplet_loss

    def batch_hard_cdist(labels, embeddings, margin):
        dist = torch.cdist(embeddings, embeddings, p=2)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        hardest_positive = dist.masked_fill(~same, 0).max(dim=1)[0]
        hardest_negative = dist.masked_fill(same, float("inf")).min(dim=1)[0]
        return F.relu(hardest_positive - hardest_negative + margin).mean()

    def mined_triplet_margin(labels, embeddings, margin):
        dist = torch.cdist(embeddings, embeddings)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        positive = dist.masked_fill(~same | torch.eye(len(labels), dtype=torch.bool), -1).argmax(dim=1)
        negative = dist.masked_fill(same, float("inf")).argmin(dim=1)
        criterion = torch.nn.TripletMarginLoss(margin=margin, p=2)
        return criterion(embeddings, embeddings[positive], embeddings[negative])

    F = torch.nn.functional
    losses = {"expanded": batch_hard_triplet_loss, "cdist": batch_hard_cdist, "TripletMarginLoss": mined_triplet_margin}
    return losses[variant]
