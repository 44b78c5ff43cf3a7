"""A pure-PyTorch instant-NGP: yashbhalgat/HashNeRF-pytorch's ``hash_encoding.py`` (``HashEmbedder``, ``SHEncoder``),
``utils.py`` (``hash``, ``get_voxel_vertices``, ``get_bbox3d_for_blenderobj`` with ``ray_utils``' ray helpers),
``loss.py`` (``total_variation_loss``, ``sigma_sparsity_loss``), ``radam.py`` (its own ``RAdam``),
``run_nerf_helpers.py`` (``NeRFSmall``, ``get_rays``, ``ndc_rays``, ``sample_pdf``, ``img2mse``, ``mse2psnr``),
``load_blender.py``'s ``pose_spherical`` and ``run_nerf.py`` (``batchify``, ``run_network``, ``render``,
``raw2outputs``, ``render_rays``, ``create_nerf``, the training iteration) as written, for ``torch`` being torch or
kiln: the program of ``test_porting_probes_hash_nerf.py``, whose docstring says what it covers and what was adapted.
"""

from __future__ import annotations

import math
from math import exp, floor, log
from types import SimpleNamespace

import numpy as np


def hashnerf(torch, nn, F, DEBUG=False, compile_friendly=False):
    """The repository's functions and classes, closed over ``torch``. ``compile_friendly`` makes the three edits a
    torch.compile(fullgraph=True) user makes (see the test module): ``torch.clamp`` without the data-dependent ``if not
    torch.all(...)`` guard, ``Categorical(..., validate_args=False)`` and ``if DEBUG and (torch.isnan(...).any() ...)``
    with ``DEBUG`` first."""
    Categorical = torch.distributions.Categorical

    # ---------------------------------------------------------------- utils.py
    BOX_OFFSETS = torch.tensor([[[i,j,k] for i in [0, 1] for j in [0, 1] for k in [0, 1]]])

    def hash(coords, log2_hashmap_size):
        '''
        coords: this function can process upto 7 dim coordinates
        log2T:  logarithm of T w.r.t 2
        '''
        primes = [1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737]

        xor_result = torch.zeros_like(coords)[..., 0]
        for i in range(coords.shape[-1]):
            xor_result ^= coords[..., i]*primes[i]

        return torch.tensor((1<<log2_hashmap_size)-1).to(xor_result.device) & xor_result

    # ray_utils.py (kornia's ``create_meshgrid(H, W, normalized_coordinates=False)`` written out)
    def create_meshgrid(height, width, normalized_coordinates=False):
        xs = torch.linspace(0, width - 1, width)
        ys = torch.linspace(0, height - 1, height)
        base_grid = torch.stack(torch.meshgrid([xs, ys], indexing="ij")).transpose(1, 2)  # 2xHxW
        return torch.unsqueeze(base_grid, dim=0).permute(0, 2, 3, 1)  # 1xHxWx2

    def get_ray_directions(H, W, focal):
        grid = create_meshgrid(H, W, normalized_coordinates=False)[0]
        i, j = grid.unbind(-1)
        # the direction here is without +0.5 pixel centering as calibration is not so accurate
        # see https://github.com/bmild/nerf/issues/24
        directions = \
            torch.stack([(i-W/2)/focal, -(j-H/2)/focal, -torch.ones_like(i)], -1) # (H, W, 3)

        return directions

    def get_rays_ray_utils(directions, c2w):
        # Rotate ray directions from camera coordinate to the world coordinate
        rays_d = directions @ c2w[:, :3].T # (H, W, 3)
        rays_d = rays_d / torch.norm(rays_d, dim=-1, keepdim=True)
        # The origin of all rays is the camera origin in world coordinate
        rays_o = c2w[:, 3].expand(rays_d.shape) # (H, W, 3)

        rays_d = rays_d.view(-1, 3)
        rays_o = rays_o.view(-1, 3)

        return rays_o, rays_d

    def get_bbox3d_for_blenderobj(camera_transforms, H, W, near=2.0, far=6.0):
        camera_angle_x = float(camera_transforms['camera_angle_x'])
        focal = 0.5*W/np.tan(0.5 * camera_angle_x)

        # ray directions in camera coordinates
        directions = get_ray_directions(H, W, focal)

        min_bound = [100, 100, 100]
        max_bound = [-100, -100, -100]

        points = []

        for frame in camera_transforms["frames"]:
            c2w = torch.FloatTensor(frame["transform_matrix"])
            rays_o, rays_d = get_rays_ray_utils(directions, c2w)

            def find_min_max(pt):
                for i in range(3):
                    if(min_bound[i] > pt[i]):
                        min_bound[i] = pt[i]
                    if(max_bound[i] < pt[i]):
                        max_bound[i] = pt[i]
                return

            for i in [0, W-1, H*W-W, H*W-1]:
                min_point = rays_o[i] + near*rays_d[i]
                max_point = rays_o[i] + far*rays_d[i]
                points += [min_point, max_point]
                find_min_max(min_point)
                find_min_max(max_point)

        return (torch.tensor(min_bound)-torch.tensor([1.0,1.0,1.0]), torch.tensor(max_bound)+torch.tensor([1.0,1.0,1.0]))

    def get_voxel_vertices(xyz, bounding_box, resolution, log2_hashmap_size):
        '''
        xyz: 3D coordinates of samples. B x 3
        bounding_box: min and max x,y,z coordinates of object bbox
        resolution: number of voxels per axis
        '''
        box_min, box_max = bounding_box

        keep_mask = xyz==torch.max(torch.min(xyz, box_max), box_min)
        if compile_friendly:
            xyz = torch.clamp(xyz, min=box_min, max=box_max)
        elif not torch.all(xyz <= box_max) or not torch.all(xyz >= box_min):
            # print("ALERT: some points are outside bounding box. Clipping them!")
            xyz = torch.clamp(xyz, min=box_min, max=box_max)

        grid_size = (box_max-box_min)/resolution

        bottom_left_idx = torch.floor((xyz-box_min)/grid_size).int()
        voxel_min_vertex = bottom_left_idx*grid_size + box_min
        voxel_max_vertex = voxel_min_vertex + torch.tensor([1.0,1.0,1.0])*grid_size

        voxel_indices = bottom_left_idx.unsqueeze(1) + BOX_OFFSETS
        hashed_voxel_indices = hash(voxel_indices, log2_hashmap_size)

        return voxel_min_vertex, voxel_max_vertex, hashed_voxel_indices, keep_mask

    # -------------------------------------------------------- hash_encoding.py
    class HashEmbedder(nn.Module):
        def __init__(self, bounding_box, n_levels=16, n_features_per_level=2,\
                    log2_hashmap_size=19, base_resolution=16, finest_resolution=512):
            super(HashEmbedder, self).__init__()
            self.bounding_box = bounding_box
            self.n_levels = n_levels
            self.n_features_per_level = n_features_per_level
            self.log2_hashmap_size = log2_hashmap_size
            self.base_resolution = torch.tensor(base_resolution)
            self.finest_resolution = torch.tensor(finest_resolution)
            self.out_dim = self.n_levels * self.n_features_per_level

            self.b = torch.exp((torch.log(self.finest_resolution)-torch.log(self.base_resolution))/(n_levels-1))

            self.embeddings = nn.ModuleList([nn.Embedding(2**self.log2_hashmap_size, \
                                            self.n_features_per_level) for i in range(n_levels)])
            # custom uniform initialization
            for i in range(n_levels):
                nn.init.uniform_(self.embeddings[i].weight, a=-0.0001, b=0.0001)
                # self.embeddings[i].weight.data.zero_()


        def trilinear_interp(self, x, voxel_min_vertex, voxel_max_vertex, voxel_embedds):
            '''
            x: B x 3
            voxel_min_vertex: B x 3
            voxel_max_vertex: B x 3
            voxel_embedds: B x 8 x 2
            '''
            # source: https://en.wikipedia.org/wiki/Trilinear_interpolation
            weights = (x - voxel_min_vertex)/(voxel_max_vertex-voxel_min_vertex) # B x 3

            # step 1
            # 0->000, 1->001, 2->010, 3->011, 4->100, 5->101, 6->110, 7->111
            c00 = voxel_embedds[:,0]*(1-weights[:,0][:,None]) + voxel_embedds[:,4]*weights[:,0][:,None]
            c01 = voxel_embedds[:,1]*(1-weights[:,0][:,None]) + voxel_embedds[:,5]*weights[:,0][:,None]
            c10 = voxel_embedds[:,2]*(1-weights[:,0][:,None]) + voxel_embedds[:,6]*weights[:,0][:,None]
            c11 = voxel_embedds[:,3]*(1-weights[:,0][:,None]) + voxel_embedds[:,7]*weights[:,0][:,None]

            # step 2
            c0 = c00*(1-weights[:,1][:,None]) + c10*weights[:,1][:,None]
            c1 = c01*(1-weights[:,1][:,None]) + c11*weights[:,1][:,None]

            # step 3
            c = c0*(1-weights[:,2][:,None]) + c1*weights[:,2][:,None]

            return c

        def forward(self, x):
            # x is 3D point position: B x 3
            x_embedded_all = []
            for i in range(self.n_levels):
                resolution = torch.floor(self.base_resolution * self.b**i)
                voxel_min_vertex, voxel_max_vertex, hashed_voxel_indices, keep_mask = get_voxel_vertices(\
                                                    x, self.bounding_box, \
                                                    resolution, self.log2_hashmap_size)

                voxel_embedds = self.embeddings[i](hashed_voxel_indices)

                x_embedded = self.trilinear_interp(x, voxel_min_vertex, voxel_max_vertex, voxel_embedds)
                x_embedded_all.append(x_embedded)

            keep_mask = keep_mask.sum(dim=-1)==keep_mask.shape[-1]
            return torch.cat(x_embedded_all, dim=-1), keep_mask

    class SHEncoder(nn.Module):
        def __init__(self, input_dim=3, degree=4):

            super().__init__()

            self.input_dim = input_dim
            self.degree = degree

            assert self.input_dim == 3
            assert self.degree >= 1 and self.degree <= 5

            self.out_dim = degree ** 2

            self.C0 = 0.28209479177387814
            self.C1 = 0.4886025119029199
            self.C2 = [
                1.0925484305920792,
                -1.0925484305920792,
                0.31539156525252005,
                -1.0925484305920792,
                0.5462742152960396
            ]
            self.C3 = [
                -0.5900435899266435,
                2.890611442640554,
                -0.4570457994644658,
                0.3731763325901154,
                -0.4570457994644658,
                1.445305721320277,
                -0.5900435899266435
            ]
            self.C4 = [
                2.5033429417967046,
                -1.7701307697799304,
                0.9461746957575601,
                -0.6690465435572892,
                0.10578554691520431,
                -0.6690465435572892,
                0.47308734787878004,
                -1.7701307697799304,
                0.6258357354491761
            ]

        def forward(self, input, **kwargs):

            result = torch.empty((*input.shape[:-1], self.out_dim), dtype=input.dtype, device=input.device)
            x, y, z = input.unbind(-1)

            result[..., 0] = self.C0
            if self.degree > 1:
                result[..., 1] = -self.C1 * y
                result[..., 2] = self.C1 * z
                result[..., 3] = -self.C1 * x
                if self.degree > 2:
                    xx, yy, zz = x * x, y * y, z * z
                    xy, yz, xz = x * y, y * z, x * z
                    result[..., 4] = self.C2[0] * xy
                    result[..., 5] = self.C2[1] * yz
                    result[..., 6] = self.C2[2] * (2.0 * zz - xx - yy)
                    #result[..., 6] = self.C2[2] * (3.0 * zz - 1) # xx + yy + zz == 1, but this will lead to different backward gradients, interesting...
                    result[..., 7] = self.C2[3] * xz
                    result[..., 8] = self.C2[4] * (xx - yy)
                    if self.degree > 3:
                        result[..., 9] = self.C3[0] * y * (3 * xx - yy)
                        result[..., 10] = self.C3[1] * xy * z
                        result[..., 11] = self.C3[2] * y * (4 * zz - xx - yy)
                        result[..., 12] = self.C3[3] * z * (2 * zz - 3 * xx - 3 * yy)
                        result[..., 13] = self.C3[4] * x * (4 * zz - xx - yy)
                        result[..., 14] = self.C3[5] * z * (xx - yy)
                        result[..., 15] = self.C3[6] * x * (xx - 3 * yy)
                        if self.degree > 4:
                            result[..., 16] = self.C4[0] * xy * (xx - yy)
                            result[..., 17] = self.C4[1] * yz * (3 * xx - yy)
                            result[..., 18] = self.C4[2] * xy * (7 * zz - 1)
                            result[..., 19] = self.C4[3] * yz * (7 * zz - 3)
                            result[..., 20] = self.C4[4] * (zz * (35 * zz - 30) + 3)
                            result[..., 21] = self.C4[5] * xz * (7 * zz - 3)
                            result[..., 22] = self.C4[6] * (xx - yy) * (7 * zz - 1)
                            result[..., 23] = self.C4[7] * xz * (xx - 3 * yy)
                            result[..., 24] = self.C4[8] * (xx * (xx - 3 * yy) - yy * (3 * xx - yy))

            return result

    # ---------------------------------------------------------------- loss.py
    def total_variation_loss(embeddings, min_resolution, max_resolution, level, log2_hashmap_size, n_levels=16):
        # Get resolution
        b = exp((log(max_resolution)-log(min_resolution))/(n_levels-1))
        resolution = torch.tensor(floor(min_resolution * b**level))

        # Cube size to apply TV loss
        min_cube_size = min_resolution - 1
        max_cube_size = 50 # can be tuned
        if min_cube_size > max_cube_size:
            print("ALERT! min cuboid size greater than max!")
            raise RuntimeError("pdb.set_trace()")
        cube_size = torch.floor(torch.clip(resolution/10.0, min_cube_size, max_cube_size)).int()

        # Sample cuboid
        min_vertex = torch.randint(0, resolution-cube_size, (3,))
        idx = min_vertex + torch.stack([torch.arange(cube_size+1) for _ in range(3)], dim=-1)
        cube_indices = torch.stack(torch.meshgrid(idx[:,0], idx[:,1], idx[:,2]), dim=-1)

        hashed_indices = hash(cube_indices, log2_hashmap_size)
        cube_embeddings = embeddings(hashed_indices)
        #hashed_idx_offset_x = hash(idx+torch.tensor([1,0,0]), log2_hashmap_size)
        #hashed_idx_offset_y = hash(idx+torch.tensor([0,1,0]), log2_hashmap_size)
        #hashed_idx_offset_z = hash(idx+torch.tensor([0,0,1]), log2_hashmap_size)

        # Compute loss
        #tv_x = torch.pow(embeddings(hashed_idx)-embeddings(hashed_idx_offset_x), 2).sum()
        #tv_y = torch.pow(embeddings(hashed_idx)-embeddings(hashed_idx_offset_y), 2).sum()
        #tv_z = torch.pow(embeddings(hashed_idx)-embeddings(hashed_idx_offset_z), 2).sum()
        tv_x = torch.pow(cube_embeddings[1:,:,:,:]-cube_embeddings[:-1,:,:,:], 2).sum()
        tv_y = torch.pow(cube_embeddings[:,1:,:,:]-cube_embeddings[:,:-1,:,:], 2).sum()
        tv_z = torch.pow(cube_embeddings[:,:,1:,:]-cube_embeddings[:,:,:-1,:], 2).sum()

        return (tv_x + tv_y + tv_z)/cube_size

    def sigma_sparsity_loss(sigmas):
        # Using Cauchy Sparsity loss on sigma values
        return torch.log(1.0 + 2*sigmas**2).sum(dim=-1)

    # ------------------------------------------------------ run_nerf_helpers.py
    img2mse = lambda x, y : torch.mean((x - y) ** 2)
    mse2psnr = lambda x : -10. * torch.log(x) / torch.log(torch.Tensor([10.]))
    to8b = lambda x : (255*np.clip(x,0,1)).astype(np.uint8)

    # Small NeRF for Hash embeddings
    class NeRFSmall(nn.Module):
        def __init__(self,
                     num_layers=3,
                     hidden_dim=64,
                     geo_feat_dim=15,
                     num_layers_color=4,
                     hidden_dim_color=64,
                     input_ch=3, input_ch_views=3,
                     ):
            super(NeRFSmall, self).__init__()

            self.input_ch = input_ch
            self.input_ch_views = input_ch_views

            # sigma network
            self.num_layers = num_layers
            self.hidden_dim = hidden_dim
            self.geo_feat_dim = geo_feat_dim

            sigma_net = []
            for l in range(num_layers):
                if l == 0:
                    in_dim = self.input_ch
                else:
                    in_dim = hidden_dim

                if l == num_layers - 1:
                    out_dim = 1 + self.geo_feat_dim # 1 sigma + 15 SH features for color
                else:
                    out_dim = hidden_dim

                sigma_net.append(nn.Linear(in_dim, out_dim, bias=False))

            self.sigma_net = nn.ModuleList(sigma_net)

            # color network
            self.num_layers_color = num_layers_color
            self.hidden_dim_color = hidden_dim_color

            color_net =  []
            for l in range(num_layers_color):
                if l == 0:
                    in_dim = self.input_ch_views + self.geo_feat_dim
                else:
                    in_dim = hidden_dim

                if l == num_layers_color - 1:
                    out_dim = 3 # 3 rgb
                else:
                    out_dim = hidden_dim

                color_net.append(nn.Linear(in_dim, out_dim, bias=False))

            self.color_net = nn.ModuleList(color_net)

        def forward(self, x):
            input_pts, input_views = torch.split(x, [self.input_ch, self.input_ch_views], dim=-1)

            # sigma
            h = input_pts
            for l in range(self.num_layers):
                h = self.sigma_net[l](h)
                if l != self.num_layers - 1:
                    h = F.relu(h, inplace=True)

            sigma, geo_feat = h[..., 0], h[..., 1:]

            # color
            h = torch.cat([input_views, geo_feat], dim=-1)
            for l in range(self.num_layers_color):
                h = self.color_net[l](h)
                if l != self.num_layers_color - 1:
                    h = F.relu(h, inplace=True)

            # color = torch.sigmoid(h)
            color = h
            outputs = torch.cat([color, sigma.unsqueeze(dim=-1)], -1)

            return outputs

    # Ray helpers
    def get_rays(H, W, K, c2w):
        i, j = torch.meshgrid(torch.linspace(0, W-1, W), torch.linspace(0, H-1, H))  # pytorch's meshgrid has indexing='ij'
        i = i.t()
        j = j.t()
        dirs = torch.stack([(i-K[0][2])/K[0][0], -(j-K[1][2])/K[1][1], -torch.ones_like(i)], -1)
        # Rotate ray directions from camera frame to the world frame
        rays_d = torch.sum(dirs[..., np.newaxis, :] * c2w[:3,:3], -1)  # dot product, equals to: [c2w.dot(dir) for dir in dirs]
        # Translate camera frame's origin to the world frame. It is the origin of all rays.
        rays_o = c2w[:3,-1].expand(rays_d.shape)
        return rays_o, rays_d

    def ndc_rays(H, W, focal, near, rays_o, rays_d):
        # Shift ray origins to near plane
        t = -(near + rays_o[...,2]) / rays_d[...,2]
        rays_o = rays_o + t[...,None] * rays_d

        # Projection
        o0 = -1./(W/(2.*focal)) * rays_o[...,0] / rays_o[...,2]
        o1 = -1./(H/(2.*focal)) * rays_o[...,1] / rays_o[...,2]
        o2 = 1. + 2. * near / rays_o[...,2]

        d0 = -1./(W/(2.*focal)) * (rays_d[...,0]/rays_d[...,2] - rays_o[...,0]/rays_o[...,2])
        d1 = -1./(H/(2.*focal)) * (rays_d[...,1]/rays_d[...,2] - rays_o[...,1]/rays_o[...,2])
        d2 = -2. * near / rays_o[...,2]

        rays_o = torch.stack([o0,o1,o2], -1)
        rays_d = torch.stack([d0,d1,d2], -1)

        return rays_o, rays_d

    # Hierarchical sampling (section 5.2)
    def sample_pdf(bins, weights, N_samples, det=False, pytest=False):
        # Get pdf
        weights = weights + 1e-5 # prevent nans
        pdf = weights / torch.sum(weights, -1, keepdim=True)
        cdf = torch.cumsum(pdf, -1)
        cdf = torch.cat([torch.zeros_like(cdf[...,:1]), cdf], -1)  # (batch, len(bins))

        # Take uniform samples
        if det:
            u = torch.linspace(0., 1., steps=N_samples)
            u = u.expand(list(cdf.shape[:-1]) + [N_samples])
        else:
            u = torch.rand(list(cdf.shape[:-1]) + [N_samples])

        # Pytest, overwrite u with numpy's fixed random numbers
        if pytest:
            np.random.seed(0)
            new_shape = list(cdf.shape[:-1]) + [N_samples]
            if det:
                u = np.linspace(0., 1., N_samples)
                u = np.broadcast_to(u, new_shape)
            else:
                u = np.random.rand(*new_shape)
            u = torch.Tensor(u)

        # Invert CDF
        u = u.contiguous()
        inds = torch.searchsorted(cdf, u, right=True)
        below = torch.max(torch.zeros_like(inds-1), inds-1)
        above = torch.min((cdf.shape[-1]-1) * torch.ones_like(inds), inds)
        inds_g = torch.stack([below, above], -1)  # (batch, N_samples, 2)

        # cdf_g = tf.gather(cdf, inds_g, axis=-1, batch_dims=len(inds_g.shape)-2)
        # bins_g = tf.gather(bins, inds_g, axis=-1, batch_dims=len(inds_g.shape)-2)
        matched_shape = [inds_g.shape[0], inds_g.shape[1], cdf.shape[-1]]
        cdf_g = torch.gather(cdf.unsqueeze(1).expand(matched_shape), 2, inds_g)
        bins_g = torch.gather(bins.unsqueeze(1).expand(matched_shape), 2, inds_g)

        denom = (cdf_g[...,1]-cdf_g[...,0])
        denom = torch.where(denom<1e-5, torch.ones_like(denom), denom)
        t = (u-cdf_g[...,0])/denom
        samples = bins_g[...,0] + t * (bins_g[...,1]-bins_g[...,0])

        return samples

    # ------------------------------------------------------------ load_blender.py
    trans_t = lambda t : torch.Tensor([
        [1,0,0,0],
        [0,1,0,0],
        [0,0,1,t],
        [0,0,0,1]]).float()

    rot_phi = lambda phi : torch.Tensor([
        [1,0,0,0],
        [0,np.cos(phi),-np.sin(phi),0],
        [0,np.sin(phi), np.cos(phi),0],
        [0,0,0,1]]).float()

    rot_theta = lambda th : torch.Tensor([
        [np.cos(th),0,-np.sin(th),0],
        [0,1,0,0],
        [np.sin(th),0, np.cos(th),0],
        [0,0,0,1]]).float()

    def pose_spherical(theta, phi, radius):
        c2w = trans_t(radius)
        c2w = rot_phi(phi/180.*np.pi) @ c2w
        c2w = rot_theta(theta/180.*np.pi) @ c2w
        c2w = torch.Tensor(np.array([[-1,0,0,0],[0,0,1,0],[0,1,0,0],[0,0,0,1]])) @ c2w
        return c2w

    # ------------------------------------------------------------------ radam.py
    from_optimizer = torch.optim.Optimizer

    class RAdam(from_optimizer):

        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, degenerated_to_sgd=False):
            if not 0.0 <= lr:
                raise ValueError("Invalid learning rate: {}".format(lr))
            if not 0.0 <= eps:
                raise ValueError("Invalid epsilon value: {}".format(eps))
            if not 0.0 <= betas[0] < 1.0:
                raise ValueError("Invalid beta parameter at index 0: {}".format(betas[0]))
            if not 0.0 <= betas[1] < 1.0:
                raise ValueError("Invalid beta parameter at index 1: {}".format(betas[1]))

            self.degenerated_to_sgd = degenerated_to_sgd
            if isinstance(params, (list, tuple)) and len(params) > 0 and isinstance(params[0], dict):
                for param in params:
                    if 'betas' in param and (param['betas'][0] != betas[0] or param['betas'][1] != betas[1]):
                        param['buffer'] = [[None, None, None] for _ in range(10)]
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, buffer=[[None, None, None] for _ in range(10)])
            super(RAdam, self).__init__(params, defaults)

        def __setstate__(self, state):
            super(RAdam, self).__setstate__(state)

        def step(self, closure=None):

            loss = None
            if closure is not None:
                loss = closure()

            for group in self.param_groups:

                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad.data.float()
                    if grad.is_sparse:
                        raise RuntimeError('RAdam does not support sparse gradients')

                    p_data_fp32 = p.data.float()

                    state = self.state[p]

                    if len(state) == 0:
                        state['step'] = 0
                        state['exp_avg'] = torch.zeros_like(p_data_fp32)
                        state['exp_avg_sq'] = torch.zeros_like(p_data_fp32)
                    else:
                        state['exp_avg'] = state['exp_avg'].type_as(p_data_fp32)
                        state['exp_avg_sq'] = state['exp_avg_sq'].type_as(p_data_fp32)

                    exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
                    beta1, beta2 = group['betas']

                    exp_avg_sq.mul_(beta2).addcmul_(1 - beta2, grad, grad)
                    exp_avg.mul_(beta1).add_(1 - beta1, grad)

                    state['step'] += 1
                    buffered = group['buffer'][int(state['step'] % 10)]
                    if state['step'] == buffered[0]:
                        N_sma, step_size = buffered[1], buffered[2]
                    else:
                        buffered[0] = state['step']
                        beta2_t = beta2 ** state['step']
                        N_sma_max = 2 / (1 - beta2) - 1
                        N_sma = N_sma_max - 2 * state['step'] * beta2_t / (1 - beta2_t)
                        buffered[1] = N_sma

                        # more conservative since it's an approximated value
                        if N_sma >= 5:
                            step_size = math.sqrt((1 - beta2_t) * (N_sma - 4) / (N_sma_max - 4) * (N_sma - 2) / N_sma * N_sma_max / (N_sma_max - 2)) / (1 - beta1 ** state['step'])
                        elif self.degenerated_to_sgd:
                            step_size = 1.0 / (1 - beta1 ** state['step'])
                        else:
                            step_size = -1
                        buffered[2] = step_size

                    # more conservative since it's an approximated value
                    if N_sma >= 5:
                        if group['weight_decay'] != 0:
                            p_data_fp32.add_(-group['weight_decay'] * group['lr'], p_data_fp32)
                        denom = exp_avg_sq.sqrt().add_(group['eps'])
                        p_data_fp32.addcdiv_(-step_size * group['lr'], exp_avg, denom)
                        p.data.copy_(p_data_fp32)
                    elif step_size > 0:
                        if group['weight_decay'] != 0:
                            p_data_fp32.add_(-group['weight_decay'] * group['lr'], p_data_fp32)
                        p_data_fp32.add_(-step_size * group['lr'], exp_avg)
                        p.data.copy_(p_data_fp32)

            return loss

    # ------------------------------------------------------------------ run_nerf.py
    def batchify(fn, chunk):
        """Constructs a version of 'fn' that applies to smaller batches.
        """
        if chunk is None:
            return fn
        def ret(inputs):
            return torch.cat([fn(inputs[i:i+chunk]) for i in range(0, inputs.shape[0], chunk)], 0)
        return ret

    def run_network(inputs, viewdirs, fn, embed_fn, embeddirs_fn, netchunk=1024*64):
        """Prepares inputs and applies network 'fn'.
        """
        inputs_flat = torch.reshape(inputs, [-1, inputs.shape[-1]])
        embedded, keep_mask = embed_fn(inputs_flat)

        if viewdirs is not None:
            input_dirs = viewdirs[:,None].expand(inputs.shape)
            input_dirs_flat = torch.reshape(input_dirs, [-1, input_dirs.shape[-1]])
            embedded_dirs = embeddirs_fn(input_dirs_flat)
            embedded = torch.cat([embedded, embedded_dirs], -1)

        outputs_flat = batchify(fn, netchunk)(embedded)
        outputs_flat[~keep_mask, -1] = 0 # set sigma to 0 for invalid points
        outputs = torch.reshape(outputs_flat, list(inputs.shape[:-1]) + [outputs_flat.shape[-1]])
        return outputs

    def batchify_rays(rays_flat, chunk=1024*32, **kwargs):
        """Render rays in smaller minibatches to avoid OOM.
        """
        all_ret = {}
        for i in range(0, rays_flat.shape[0], chunk):
            ret = render_rays(rays_flat[i:i+chunk], **kwargs)
            for k in ret:
                if k not in all_ret:
                    all_ret[k] = []
                all_ret[k].append(ret[k])

        all_ret = {k : torch.cat(all_ret[k], 0) for k in all_ret}
        return all_ret

    def render(H, W, K, chunk=1024*32, rays=None, c2w=None, ndc=True,
                      near=0., far=1.,
                      use_viewdirs=False, c2w_staticcam=None,
                      **kwargs):
        if c2w is not None:
            # special case to render full image
            rays_o, rays_d = get_rays(H, W, K, c2w)
        else:
            # use provided ray batch
            rays_o, rays_d = rays

        if use_viewdirs:
            # provide ray directions as input
            viewdirs = rays_d
            if c2w_staticcam is not None:
                # special case to visualize effect of viewdirs
                rays_o, rays_d = get_rays(H, W, K, c2w_staticcam)
            viewdirs = viewdirs / torch.norm(viewdirs, dim=-1, keepdim=True)
            viewdirs = torch.reshape(viewdirs, [-1,3]).float()

        sh = rays_d.shape # [..., 3]
        if ndc:
            # for forward facing scenes
            rays_o, rays_d = ndc_rays(H, W, K[0][0], 1., rays_o, rays_d)

        # Create ray batch
        rays_o = torch.reshape(rays_o, [-1,3]).float()
        rays_d = torch.reshape(rays_d, [-1,3]).float()

        near, far = near * torch.ones_like(rays_d[...,:1]), far * torch.ones_like(rays_d[...,:1])
        rays = torch.cat([rays_o, rays_d, near, far], -1)
        if use_viewdirs:
            rays = torch.cat([rays, viewdirs], -1)

        # Render and reshape
        all_ret = batchify_rays(rays, chunk, **kwargs)
        for k in all_ret:
            k_sh = list(sh[:-1]) + list(all_ret[k].shape[1:])
            all_ret[k] = torch.reshape(all_ret[k], k_sh)

        k_extract = ['rgb_map', 'depth_map', 'acc_map']
        ret_list = [all_ret[k] for k in k_extract]
        ret_dict = {k : all_ret[k] for k in all_ret if k not in k_extract}
        return ret_list + [ret_dict]

    def create_nerf(args):
        """Instantiate NeRF's MLP model (the hashed-embedding branches: ``i_embed=1``, ``i_embed_views=2``).
        """
        embed_fn = HashEmbedder(bounding_box=args.bounding_box, \
                                n_levels=args.n_levels, \
                                log2_hashmap_size=args.log2_hashmap_size, \
                                base_resolution=args.base_res, \
                                finest_resolution=args.finest_res)
        input_ch = embed_fn.out_dim
        # hashed embedding table
        embedding_params = list(embed_fn.parameters())

        input_ch_views = 0
        embeddirs_fn = None
        if args.use_viewdirs:
            # if using hashed for xyz, use SH for views
            embeddirs_fn = SHEncoder()
            input_ch_views = embeddirs_fn.out_dim

        model = NeRFSmall(num_layers=2,
                        hidden_dim=args.hidden_dim,
                        geo_feat_dim=15,
                        num_layers_color=3,
                        hidden_dim_color=args.hidden_dim,
                        input_ch=input_ch, input_ch_views=input_ch_views)
        grad_vars = list(model.parameters())

        model_fine = None

        if args.N_importance > 0:
            model_fine = NeRFSmall(num_layers=2,
                        hidden_dim=args.hidden_dim,
                        geo_feat_dim=15,
                        num_layers_color=3,
                        hidden_dim_color=args.hidden_dim,
                        input_ch=input_ch, input_ch_views=input_ch_views)
            grad_vars += list(model_fine.parameters())

        network_query_fn = lambda inputs, viewdirs, network_fn : run_network(inputs, viewdirs, network_fn,
                                                                    embed_fn=embed_fn,
                                                                    embeddirs_fn=embeddirs_fn,
                                                                    netchunk=args.netchunk)

        render_kwargs_train = {
            'network_query_fn' : network_query_fn,
            'perturb' : args.perturb,
            'N_importance' : args.N_importance,
            'network_fine' : model_fine,
            'N_samples' : args.N_samples,
            'network_fn' : model,
            'embed_fn': embed_fn,
            'use_viewdirs' : args.use_viewdirs,
            'white_bkgd' : args.white_bkgd,
            'raw_noise_std' : args.raw_noise_std,
        }

        # NDC only good for LLFF-style forward facing data
        if args.dataset_type != 'llff' or args.no_ndc:
            render_kwargs_train['ndc'] = False
            render_kwargs_train['lindisp'] = args.lindisp

        render_kwargs_test = {k : render_kwargs_train[k] for k in render_kwargs_train}
        render_kwargs_test['perturb'] = False
        render_kwargs_test['raw_noise_std'] = 0.

        return render_kwargs_train, render_kwargs_test, grad_vars, embedding_params

    def make_optimizer(args, grad_vars, embedding_params, optimizer_class=None):
        """create_nerf's optimizer: RAdam with the embeddings in a group of their own."""
        optimizer_class = optimizer_class or torch.optim.RAdam
        return optimizer_class([
                                {'params': grad_vars, 'weight_decay': 1e-6},
                                {'params': embedding_params, 'eps': 1e-15}
                            ], lr=args.lrate, betas=(0.9, 0.99))

    def raw2outputs(raw, z_vals, rays_d, raw_noise_std=0, white_bkgd=False, pytest=False):
        """Transforms model's predictions to semantically meaningful values.
        """
        raw2alpha = lambda raw, dists, act_fn=F.relu: 1.-torch.exp(-act_fn(raw)*dists)

        dists = z_vals[...,1:] - z_vals[...,:-1]
        dists = torch.cat([dists, torch.Tensor([1e10]).expand(dists[...,:1].shape)], -1)  # [N_rays, N_samples]

        dists = dists * torch.norm(rays_d[...,None,:], dim=-1)

        rgb = torch.sigmoid(raw[...,:3])  # [N_rays, N_samples, 3]
        noise = 0.
        if raw_noise_std > 0.:
            noise = torch.randn(raw[...,3].shape) * raw_noise_std

            # Overwrite randomly sampled data if pytest
            if pytest:
                np.random.seed(0)
                noise = np.random.rand(*list(raw[...,3].shape)) * raw_noise_std
                noise = torch.Tensor(noise)

        # sigma_loss = sigma_sparsity_loss(raw[...,3])
        alpha = raw2alpha(raw[...,3] + noise, dists)  # [N_rays, N_samples]
        # weights = alpha * tf.math.cumprod(1.-alpha + 1e-10, -1, exclusive=True)
        weights = alpha * torch.cumprod(torch.cat([torch.ones((alpha.shape[0], 1)), 1.-alpha + 1e-10], -1), -1)[:, :-1]
        rgb_map = torch.sum(weights[...,None] * rgb, -2)  # [N_rays, 3]

        depth_map = torch.sum(weights * z_vals, -1) / torch.sum(weights, -1)
        disp_map = 1./torch.max(1e-10 * torch.ones_like(depth_map), depth_map)
        acc_map = torch.sum(weights, -1)

        if white_bkgd:
            rgb_map = rgb_map + (1.-acc_map[...,None])

        # Calculate weights sparsity loss
        try:
            entropy = Categorical(probs = torch.cat([weights, 1.0-weights.sum(-1, keepdim=True)+1e-6], dim=-1),
                                  validate_args=False if compile_friendly else None).entropy()
        except:
            raise  # pdb.set_trace()
        sparsity_loss = entropy

        return rgb_map, disp_map, acc_map, weights, depth_map, sparsity_loss

    def render_rays(ray_batch,
                    network_fn,
                    network_query_fn,
                    N_samples,
                    embed_fn=None,
                    retraw=False,
                    lindisp=False,
                    perturb=0.,
                    N_importance=0,
                    network_fine=None,
                    white_bkgd=False,
                    raw_noise_std=0.,
                    verbose=False,
                    pytest=False):
        """Volumetric rendering.
        """
        N_rays = ray_batch.shape[0]
        rays_o, rays_d = ray_batch[:,0:3], ray_batch[:,3:6] # [N_rays, 3] each
        viewdirs = ray_batch[:,-3:] if ray_batch.shape[-1] > 8 else None
        bounds = torch.reshape(ray_batch[...,6:8], [-1,1,2])
        near, far = bounds[...,0], bounds[...,1] # [-1,1]

        t_vals = torch.linspace(0., 1., steps=N_samples)
        if not lindisp:
            z_vals = near * (1.-t_vals) + far * (t_vals)
        else:
            z_vals = 1./(1./near * (1.-t_vals) + 1./far * (t_vals))

        z_vals = z_vals.expand([N_rays, N_samples])

        if perturb > 0.:
            # get intervals between samples
            mids = .5 * (z_vals[...,1:] + z_vals[...,:-1])
            upper = torch.cat([mids, z_vals[...,-1:]], -1)
            lower = torch.cat([z_vals[...,:1], mids], -1)
            # stratified samples in those intervals
            t_rand = torch.rand(z_vals.shape)

            # Pytest, overwrite u with numpy's fixed random numbers
            if pytest:
                np.random.seed(0)
                t_rand = np.random.rand(*list(z_vals.shape))
                t_rand = torch.Tensor(t_rand)

            z_vals = lower + (upper - lower) * t_rand

        pts = rays_o[...,None,:] + rays_d[...,None,:] * z_vals[...,:,None] # [N_rays, N_samples, 3]

        raw = network_query_fn(pts, viewdirs, network_fn)
        rgb_map, disp_map, acc_map, weights, depth_map, sparsity_loss = raw2outputs(raw, z_vals, rays_d, raw_noise_std, white_bkgd, pytest=pytest)

        if N_importance > 0:

            rgb_map_0, depth_map_0, acc_map_0, sparsity_loss_0 = rgb_map, depth_map, acc_map, sparsity_loss

            z_vals_mid = .5 * (z_vals[...,1:] + z_vals[...,:-1])
            z_samples = sample_pdf(z_vals_mid, weights[...,1:-1], N_importance, det=(perturb==0.), pytest=pytest)
            z_samples = z_samples.detach()

            z_vals, _ = torch.sort(torch.cat([z_vals, z_samples], -1), -1)
            pts = rays_o[...,None,:] + rays_d[...,None,:] * z_vals[...,:,None] # [N_rays, N_samples + N_importance, 3]

            run_fn = network_fn if network_fine is None else network_fine
    #         raw = run_network(pts, fn=run_fn)
            raw = network_query_fn(pts, viewdirs, run_fn)

            rgb_map, disp_map, acc_map, weights, depth_map, sparsity_loss = raw2outputs(raw, z_vals, rays_d, raw_noise_std, white_bkgd, pytest=pytest)

        ret = {'rgb_map' : rgb_map, 'depth_map' : depth_map, 'acc_map' : acc_map, 'sparsity_loss': sparsity_loss}
        if retraw:
            ret['raw'] = raw
        if N_importance > 0:
            ret['rgb0'] = rgb_map_0
            ret['depth0'] = depth_map_0
            ret['acc0'] = acc_map_0
            ret['sparsity_loss0'] = sparsity_loss_0
            ret['z_std'] = torch.std(z_samples, dim=-1, unbiased=False)  # [N_rays]

        for k in ret:
            if compile_friendly:
                if DEBUG and (torch.isnan(ret[k]).any() or torch.isinf(ret[k]).any()):
                    print(f"! [Numerical Error] {k} contains nan or inf.")
            elif (torch.isnan(ret[k]).any() or torch.isinf(ret[k]).any()) and DEBUG:
                print(f"! [Numerical Error] {k} contains nan or inf.")

        return ret

    def training_loss(args, H, W, K, batch_rays, target_s, render_kwargs_train, optimizer):
        """The core of train()'s iteration: render, ``zero_grad``, the photometric, sparsity and TV losses."""
        rgb, depth, acc, extras = render(H, W, K, chunk=args.chunk, rays=batch_rays,
                                                verbose=False, retraw=True,
                                                **render_kwargs_train)

        optimizer.zero_grad()
        img_loss = img2mse(rgb, target_s)
        trans = extras['raw'][...,-1]
        loss = img_loss
        psnr = mse2psnr(img_loss)

        if 'rgb0' in extras:
            img_loss0 = img2mse(extras['rgb0'], target_s)
            loss = loss + img_loss0
            psnr0 = mse2psnr(img_loss0)

        sparsity_loss = args.sparse_loss_weight*(extras["sparsity_loss"].sum() + extras["sparsity_loss0"].sum())
        loss = loss + sparsity_loss

        # add Total Variation loss
        n_levels = render_kwargs_train["embed_fn"].n_levels
        min_res = render_kwargs_train["embed_fn"].base_resolution
        max_res = render_kwargs_train["embed_fn"].finest_resolution
        log2_hashmap_size = render_kwargs_train["embed_fn"].log2_hashmap_size
        TV_loss = sum(total_variation_loss(render_kwargs_train["embed_fn"].embeddings[i], \
                                          min_res, max_res, \
                                          i, log2_hashmap_size, \
                                          n_levels=n_levels) for i in range(n_levels))
        loss = loss + args.tv_loss_weight * TV_loss
        return loss, psnr, psnr0, extras

    def sample_ray_batch(args, H, W, K, images, poses, i_train, i):
        """train()'s no_batching branch: a random image, its rays, ``N_rand`` random pixels (NumPy's generator)."""
        img_i = np.random.choice(i_train)
        target = images[img_i]
        target = torch.Tensor(target)
        pose = poses[img_i, :3,:4]

        rays_o, rays_d = get_rays(H, W, K, torch.Tensor(pose))  # (H, W, 3), (H, W, 3)

        if i < args.precrop_iters:
            dH = int(H//2 * args.precrop_frac)
            dW = int(W//2 * args.precrop_frac)
            coords = torch.stack(
                torch.meshgrid(
                    torch.linspace(H//2 - dH, H//2 + dH - 1, 2*dH),
                    torch.linspace(W//2 - dW, W//2 + dW - 1, 2*dW)
                ), -1)
        else:
            coords = torch.stack(torch.meshgrid(torch.linspace(0, H-1, H), torch.linspace(0, W-1, W)), -1)  # (H, W, 2)

        coords = torch.reshape(coords, [-1,2])  # (H * W, 2)
        select_inds = np.random.choice(coords.shape[0], size=[args.N_rand], replace=False)  # (N_rand,)
        select_coords = coords[select_inds].long()  # (N_rand, 2)
        rays_o = rays_o[select_coords[:, 0], select_coords[:, 1]]  # (N_rand, 3)
        rays_d = rays_d[select_coords[:, 0], select_coords[:, 1]]  # (N_rand, 3)
        batch_rays = torch.stack([rays_o, rays_d], 0)
        target_s = target[select_coords[:, 0], select_coords[:, 1]]  # (N_rand, 3)
        return batch_rays, target_s

    def update_learning_rate(args, optimizer, global_step):
        # NOTE: IMPORTANT!
        ###   update learning rate   ###
        decay_rate = 0.1
        decay_steps = args.lrate_decay * 1000
        new_lrate = args.lrate * (decay_rate ** (global_step / decay_steps))
        for param_group in optimizer.param_groups:
            param_group['lr'] = new_lrate
        ################################

    return SimpleNamespace(**{name: value for name, value in locals().items() if not name.startswith("_")})
