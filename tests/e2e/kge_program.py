"""Knowledge-graph embeddings, twice, each written once for ``torch`` being torch or kiln: DeepGraphLearning/
KnowledgeGraphEmbedding's ``codes/model.py`` and ``codes/dataloader.py`` (TransE, DistMult, ComplEx, RotatE, pRotatE
with self-adversarial negative sampling), and thunlp/OpenKE's ``openke/module`` TransE and RotatE with their
``MarginLoss``, ``SigmoidLoss`` and ``NegativeSampling``: the program of ``test_porting_probes_kge.py``, whose
docstring says what it covers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

ENTITIES, RELATIONS, HIDDEN, NEGATIVES, BATCH = 8, 3, 4, 4, 4
"""Entities, relations, the embedding size, negatives per fact, facts per batch."""

TRAIN_TRIPLES = [(0, 0, 1), (1, 0, 2), (2, 1, 3), (3, 2, 4), (4, 0, 5), (5, 1, 6), (6, 2, 7), (7, 0, 0)]
TEST_TRIPLES = [(0, 1, 4), (2, 0, 6), (5, 2, 1)]
"""(head, relation, tail) facts, as read_triple returns them: tuples of ints."""


def kge_args(**changes):
    """run.py's ``args`` for the train and test steps."""
    args = dict(cuda=False, negative_adversarial_sampling=True, adversarial_temperature=1.0, uni_weight=False,
                regularization=0.0, countries=False, nentity=ENTITIES, nrelation=RELATIONS, test_batch_size=2,
                cpu_num=2, test_log_steps=1000, negative_sample_size=NEGATIVES, batch_size=BATCH)
    return SimpleNamespace(**{**args, **changes})


# --- DeepGraphLearning/KnowledgeGraphEmbedding codes/model.py ----------------------------------------------------------


def kge_model(torch, nn, F):
    """model.py's ``KGEModel`` (its test_step's countries branch and logging lines left out)."""
    DataLoader = torch.utils.data.DataLoader
    TestDataset = kge_datasets(torch)[1]

    class KGEModel(nn.Module):
        def __init__(self, model_name, nentity, nrelation, hidden_dim, gamma,
                     double_entity_embedding=False, double_relation_embedding=False):
            super(KGEModel, self).__init__()
            self.model_name = model_name
            self.nentity = nentity
            self.nrelation = nrelation
            self.hidden_dim = hidden_dim
            self.epsilon = 2.0

            self.gamma = nn.Parameter(
                torch.Tensor([gamma]),
                requires_grad=False
            )

            self.embedding_range = nn.Parameter(
                torch.Tensor([(self.gamma.item() + self.epsilon) / hidden_dim]),
                requires_grad=False
            )

            self.entity_dim = hidden_dim*2 if double_entity_embedding else hidden_dim
            self.relation_dim = hidden_dim*2 if double_relation_embedding else hidden_dim

            self.entity_embedding = nn.Parameter(torch.zeros(nentity, self.entity_dim))
            nn.init.uniform_(
                tensor=self.entity_embedding,
                a=-self.embedding_range.item(),
                b=self.embedding_range.item()
            )

            self.relation_embedding = nn.Parameter(torch.zeros(nrelation, self.relation_dim))
            nn.init.uniform_(
                tensor=self.relation_embedding,
                a=-self.embedding_range.item(),
                b=self.embedding_range.item()
            )

            if model_name == 'pRotatE':
                self.modulus = nn.Parameter(torch.Tensor([[0.5 * self.embedding_range.item()]]))

            #Do not forget to modify this line when you add a new model in the "forward" function
            if model_name not in ['TransE', 'DistMult', 'ComplEx', 'RotatE', 'pRotatE']:
                raise ValueError('model %s not supported' % model_name)

            if model_name == 'RotatE' and (not double_entity_embedding or double_relation_embedding):
                raise ValueError('RotatE should use --double_entity_embedding')

            if model_name == 'ComplEx' and (not double_entity_embedding or not double_relation_embedding):
                raise ValueError('ComplEx should use --double_entity_embedding and --double_relation_embedding')

        def forward(self, sample, mode='single'):
            '''
            The scores of a batch of triples ('single') or of each fact against its negative heads ('head-batch')
            or tails ('tail-batch').
            '''

            if mode == 'single':
                batch_size, negative_sample_size = sample.size(0), 1

                head = torch.index_select(
                    self.entity_embedding,
                    dim=0,
                    index=sample[:,0]
                ).unsqueeze(1)

                relation = torch.index_select(
                    self.relation_embedding,
                    dim=0,
                    index=sample[:,1]
                ).unsqueeze(1)

                tail = torch.index_select(
                    self.entity_embedding,
                    dim=0,
                    index=sample[:,2]
                ).unsqueeze(1)

            elif mode == 'head-batch':
                tail_part, head_part = sample
                batch_size, negative_sample_size = head_part.size(0), head_part.size(1)

                head = torch.index_select(
                    self.entity_embedding,
                    dim=0,
                    index=head_part.view(-1)
                ).view(batch_size, negative_sample_size, -1)

                relation = torch.index_select(
                    self.relation_embedding,
                    dim=0,
                    index=tail_part[:, 1]
                ).unsqueeze(1)

                tail = torch.index_select(
                    self.entity_embedding,
                    dim=0,
                    index=tail_part[:, 2]
                ).unsqueeze(1)

            elif mode == 'tail-batch':
                head_part, tail_part = sample
                batch_size, negative_sample_size = tail_part.size(0), tail_part.size(1)

                head = torch.index_select(
                    self.entity_embedding,
                    dim=0,
                    index=head_part[:, 0]
                ).unsqueeze(1)

                relation = torch.index_select(
                    self.relation_embedding,
                    dim=0,
                    index=head_part[:, 1]
                ).unsqueeze(1)

                tail = torch.index_select(
                    self.entity_embedding,
                    dim=0,
                    index=tail_part.view(-1)
                ).view(batch_size, negative_sample_size, -1)

            else:
                raise ValueError('mode %s not supported' % mode)

            model_func = {
                'TransE': self.TransE,
                'DistMult': self.DistMult,
                'ComplEx': self.ComplEx,
                'RotatE': self.RotatE,
                'pRotatE': self.pRotatE
            }

            if self.model_name in model_func:
                score = model_func[self.model_name](head, relation, tail, mode)
            else:
                raise ValueError('model %s not supported' % self.model_name)

            return score

        def TransE(self, head, relation, tail, mode):
            if mode == 'head-batch':
                score = head + (relation - tail)
            else:
                score = (head + relation) - tail

            score = self.gamma.item() - torch.norm(score, p=1, dim=2)
            return score

        def DistMult(self, head, relation, tail, mode):
            if mode == 'head-batch':
                score = head * (relation * tail)
            else:
                score = (head * relation) * tail

            score = score.sum(dim = 2)
            return score

        def ComplEx(self, head, relation, tail, mode):
            re_head, im_head = torch.chunk(head, 2, dim=2)
            re_relation, im_relation = torch.chunk(relation, 2, dim=2)
            re_tail, im_tail = torch.chunk(tail, 2, dim=2)

            if mode == 'head-batch':
                re_score = re_relation * re_tail + im_relation * im_tail
                im_score = re_relation * im_tail - im_relation * re_tail
                score = re_head * re_score + im_head * im_score
            else:
                re_score = re_head * re_relation - im_head * im_relation
                im_score = re_head * im_relation + im_head * re_relation
                score = re_score * re_tail + im_score * im_tail

            score = score.sum(dim = 2)
            return score

        def RotatE(self, head, relation, tail, mode):
            pi = 3.14159265358979323846

            re_head, im_head = torch.chunk(head, 2, dim=2)
            re_tail, im_tail = torch.chunk(tail, 2, dim=2)

            #Make phases of relations uniformly distributed in [-pi, pi]

            phase_relation = relation/(self.embedding_range.item()/pi)

            re_relation = torch.cos(phase_relation)
            im_relation = torch.sin(phase_relation)

            if mode == 'head-batch':
                re_score = re_relation * re_tail + im_relation * im_tail
                im_score = re_relation * im_tail - im_relation * re_tail
                re_score = re_score - re_head
                im_score = im_score - im_head
            else:
                re_score = re_head * re_relation - im_head * im_relation
                im_score = re_head * im_relation + im_head * re_relation
                re_score = re_score - re_tail
                im_score = im_score - im_tail

            score = torch.stack([re_score, im_score], dim = 0)
            score = score.norm(dim = 0)

            score = self.gamma.item() - score.sum(dim = 2)
            return score

        def pRotatE(self, head, relation, tail, mode):
            pi = 3.14159262358979323846

            #Make phases of entities and relations uniformly distributed in [-pi, pi]

            phase_head = head/(self.embedding_range.item()/pi)
            phase_relation = relation/(self.embedding_range.item()/pi)
            phase_tail = tail/(self.embedding_range.item()/pi)

            if mode == 'head-batch':
                score = phase_head + (phase_relation - phase_tail)
            else:
                score = (phase_head + phase_relation) - phase_tail

            score = torch.sin(score)
            score = torch.abs(score)

            score = self.gamma.item() - score.sum(dim = 2) * self.modulus
            return score

        @staticmethod
        def train_step(model, optimizer, train_iterator, args):
            '''
            A single train step. Apply back-propation and return the loss
            '''

            model.train()

            optimizer.zero_grad()

            positive_sample, negative_sample, subsampling_weight, mode = next(train_iterator)

            if args.cuda:
                positive_sample = positive_sample.cuda()
                negative_sample = negative_sample.cuda()
                subsampling_weight = subsampling_weight.cuda()

            negative_score = model((positive_sample, negative_sample), mode=mode)

            if args.negative_adversarial_sampling:
                #In self-adversarial sampling, we do not apply back-propagation on the sampling weight
                negative_score = (F.softmax(negative_score * args.adversarial_temperature, dim = 1).detach()
                                  * F.logsigmoid(-negative_score)).sum(dim = 1)
            else:
                negative_score = F.logsigmoid(-negative_score).mean(dim = 1)

            positive_score = model(positive_sample)

            positive_score = F.logsigmoid(positive_score).squeeze(dim = 1)

            if args.uni_weight:
                positive_sample_loss = - positive_score.mean()
                negative_sample_loss = - negative_score.mean()
            else:
                positive_sample_loss = - (subsampling_weight * positive_score).sum()/subsampling_weight.sum()
                negative_sample_loss = - (subsampling_weight * negative_score).sum()/subsampling_weight.sum()

            loss = (positive_sample_loss + negative_sample_loss)/2

            if args.regularization != 0.0:
                #Use L3 regularization for ComplEx and DistMult
                regularization = args.regularization * (
                    model.entity_embedding.norm(p = 3)**3 +
                    model.relation_embedding.norm(p = 3).norm(p = 3)**3
                )
                loss = loss + regularization
                regularization_log = {'regularization': regularization.item()}
            else:
                regularization_log = {}

            loss.backward()

            optimizer.step()

            log = {
                **regularization_log,
                'positive_sample_loss': positive_sample_loss.item(),
                'negative_sample_loss': negative_sample_loss.item(),
                'loss': loss.item()
            }

            return log

        @staticmethod
        def test_step(model, test_triples, all_true_triples, args):
            '''
            Evaluate the model on test or valid datasets: filtered MRR, MR, HITS@1, HITS@3 and HITS@10
            '''

            model.eval()

            #Prepare dataloader for evaluation
            test_dataloader_head = DataLoader(
                TestDataset(
                    test_triples,
                    all_true_triples,
                    args.nentity,
                    args.nrelation,
                    'head-batch'
                ),
                batch_size=args.test_batch_size,
                num_workers=max(1, args.cpu_num//2),
                collate_fn=TestDataset.collate_fn
            )

            test_dataloader_tail = DataLoader(
                TestDataset(
                    test_triples,
                    all_true_triples,
                    args.nentity,
                    args.nrelation,
                    'tail-batch'
                ),
                batch_size=args.test_batch_size,
                num_workers=max(1, args.cpu_num//2),
                collate_fn=TestDataset.collate_fn
            )

            test_dataset_list = [test_dataloader_head, test_dataloader_tail]

            logs = []

            step = 0
            total_steps = sum([len(dataset) for dataset in test_dataset_list])

            with torch.no_grad():
                for test_dataset in test_dataset_list:
                    for positive_sample, negative_sample, filter_bias, mode in test_dataset:
                        if args.cuda:
                            positive_sample = positive_sample.cuda()
                            negative_sample = negative_sample.cuda()
                            filter_bias = filter_bias.cuda()

                        batch_size = positive_sample.size(0)

                        score = model((positive_sample, negative_sample), mode)
                        score += filter_bias

                        #Explicitly sort all the entities to ensure that there is no test exposure bias
                        argsort = torch.argsort(score, dim = 1, descending=True)

                        if mode == 'head-batch':
                            positive_arg = positive_sample[:, 0]
                        elif mode == 'tail-batch':
                            positive_arg = positive_sample[:, 2]
                        else:
                            raise ValueError('mode %s not supported' % mode)

                        for i in range(batch_size):
                            #Notice that argsort is not ranking
                            ranking = (argsort[i, :] == positive_arg[i]).nonzero()
                            assert ranking.size(0) == 1

                            #ranking + 1 is the true ranking used in evaluation metrics
                            ranking = 1 + ranking.item()
                            logs.append({
                                'MRR': 1.0/ranking,
                                'MR': float(ranking),
                                'HITS@1': 1.0 if ranking <= 1 else 0.0,
                                'HITS@3': 1.0 if ranking <= 3 else 0.0,
                                'HITS@10': 1.0 if ranking <= 10 else 0.0,
                            })

                        step += 1

            assert step == total_steps
            metrics = {}
            for metric in logs[0].keys():
                metrics[metric] = sum([log[metric] for log in logs])/len(logs)

            return metrics

    return KGEModel


# --- DeepGraphLearning/KnowledgeGraphEmbedding codes/dataloader.py -----------------------------------------------------


def kge_datasets(torch):
    """dataloader.py's ``(TrainDataset, TestDataset, BidirectionalOneShotIterator)``; ``np.isin`` for its
    ``np.in1d`` (removed in NumPy 2.4, the same call)."""
    Dataset = torch.utils.data.Dataset

    class TrainDataset(Dataset):
        def __init__(self, triples, nentity, nrelation, negative_sample_size, mode):
            self.len = len(triples)
            self.triples = triples
            self.triple_set = set(triples)
            self.nentity = nentity
            self.nrelation = nrelation
            self.negative_sample_size = negative_sample_size
            self.mode = mode
            self.count = self.count_frequency(triples)
            self.true_head, self.true_tail = self.get_true_head_and_tail(self.triples)

        def __len__(self):
            return self.len

        def __getitem__(self, idx):
            positive_sample = self.triples[idx]

            head, relation, tail = positive_sample

            subsampling_weight = self.count[(head, relation)] + self.count[(tail, -relation-1)]
            subsampling_weight = torch.sqrt(1 / torch.Tensor([subsampling_weight]))

            negative_sample_list = []
            negative_sample_size = 0

            while negative_sample_size < self.negative_sample_size:
                negative_sample = np.random.randint(self.nentity, size=self.negative_sample_size*2)
                if self.mode == 'head-batch':
                    mask = np.isin(
                        negative_sample,
                        self.true_head[(relation, tail)],
                        assume_unique=True,
                        invert=True
                    )
                elif self.mode == 'tail-batch':
                    mask = np.isin(
                        negative_sample,
                        self.true_tail[(head, relation)],
                        assume_unique=True,
                        invert=True
                    )
                else:
                    raise ValueError('Training batch mode %s not supported' % self.mode)
                negative_sample = negative_sample[mask]
                negative_sample_list.append(negative_sample)
                negative_sample_size += negative_sample.size

            negative_sample = np.concatenate(negative_sample_list)[:self.negative_sample_size]

            negative_sample = torch.LongTensor(negative_sample)

            positive_sample = torch.LongTensor(positive_sample)

            return positive_sample, negative_sample, subsampling_weight, self.mode

        @staticmethod
        def collate_fn(data):
            positive_sample = torch.stack([_[0] for _ in data], dim=0)
            negative_sample = torch.stack([_[1] for _ in data], dim=0)
            subsample_weight = torch.cat([_[2] for _ in data], dim=0)
            mode = data[0][3]
            return positive_sample, negative_sample, subsample_weight, mode

        @staticmethod
        def count_frequency(triples, start=4):
            '''
            Get frequency of a partial triple like (head, relation) or (relation, tail)
            The frequency will be used for subsampling like word2vec
            '''
            count = {}
            for head, relation, tail in triples:
                if (head, relation) not in count:
                    count[(head, relation)] = start
                else:
                    count[(head, relation)] += 1

                if (tail, -relation-1) not in count:
                    count[(tail, -relation-1)] = start
                else:
                    count[(tail, -relation-1)] += 1
            return count

        @staticmethod
        def get_true_head_and_tail(triples):
            '''
            Build a dictionary of true triples that will
            be used to filter these true triples for negative sampling
            '''

            true_head = {}
            true_tail = {}

            for head, relation, tail in triples:
                if (head, relation) not in true_tail:
                    true_tail[(head, relation)] = []
                true_tail[(head, relation)].append(tail)
                if (relation, tail) not in true_head:
                    true_head[(relation, tail)] = []
                true_head[(relation, tail)].append(head)

            for relation, tail in true_head:
                true_head[(relation, tail)] = np.array(list(set(true_head[(relation, tail)])))
            for head, relation in true_tail:
                true_tail[(head, relation)] = np.array(list(set(true_tail[(head, relation)])))

            return true_head, true_tail

    class TestDataset(Dataset):
        def __init__(self, triples, all_true_triples, nentity, nrelation, mode):
            self.len = len(triples)
            self.triple_set = set(all_true_triples)
            self.triples = triples
            self.nentity = nentity
            self.nrelation = nrelation
            self.mode = mode

        def __len__(self):
            return self.len

        def __getitem__(self, idx):
            head, relation, tail = self.triples[idx]

            if self.mode == 'head-batch':
                tmp = [(0, rand_head) if (rand_head, relation, tail) not in self.triple_set
                       else (-1, head) for rand_head in range(self.nentity)]
                tmp[head] = (0, head)
            elif self.mode == 'tail-batch':
                tmp = [(0, rand_tail) if (head, relation, rand_tail) not in self.triple_set
                       else (-1, tail) for rand_tail in range(self.nentity)]
                tmp[tail] = (0, tail)
            else:
                raise ValueError('negative batch mode %s not supported' % self.mode)

            tmp = torch.LongTensor(tmp)
            filter_bias = tmp[:, 0].float()
            negative_sample = tmp[:, 1]

            positive_sample = torch.LongTensor((head, relation, tail))

            return positive_sample, negative_sample, filter_bias, self.mode

        @staticmethod
        def collate_fn(data):
            positive_sample = torch.stack([_[0] for _ in data], dim=0)
            negative_sample = torch.stack([_[1] for _ in data], dim=0)
            filter_bias = torch.stack([_[2] for _ in data], dim=0)
            mode = data[0][3]
            return positive_sample, negative_sample, filter_bias, mode

    class BidirectionalOneShotIterator(object):
        def __init__(self, dataloader_head, dataloader_tail):
            self.iterator_head = self.one_shot_iterator(dataloader_head)
            self.iterator_tail = self.one_shot_iterator(dataloader_tail)
            self.step = 0

        def __next__(self):
            self.step += 1
            if self.step % 2 == 0:
                data = next(self.iterator_head)
            else:
                data = next(self.iterator_tail)
            return data

        @staticmethod
        def one_shot_iterator(dataloader):
            '''
            Transform a PyTorch Dataloader into python iterator
            '''
            while True:
                for data in dataloader:
                    yield data

    return TrainDataset, TestDataset, BidirectionalOneShotIterator


def train_iterator(torch, args, train_triples=TRAIN_TRIPLES):
    """run.py's two training loaders (``shuffle=True`` there: the libraries' samplers draw differently, so the facts
    come in order here) and the iterator alternating tail-batch and head-batch."""
    DataLoader = torch.utils.data.DataLoader
    TrainDataset, _, BidirectionalOneShotIterator = kge_datasets(torch)
    train_dataloader_head = DataLoader(
        TrainDataset(train_triples, args.nentity, args.nrelation, args.negative_sample_size, 'head-batch'),
        batch_size=args.batch_size,
        shuffle=False,
        collate_fn=TrainDataset.collate_fn
    )
    train_dataloader_tail = DataLoader(
        TrainDataset(train_triples, args.nentity, args.nrelation, args.negative_sample_size, 'tail-batch'),
        batch_size=args.batch_size,
        shuffle=False,
        collate_fn=TrainDataset.collate_fn
    )
    return BidirectionalOneShotIterator(train_dataloader_head, train_dataloader_tail)


# --- thunlp/OpenKE openke/module -------------------------------------------------------------------------------------


def openke(torch, nn, F):
    """OpenKE's ``BaseModule`` and ``Model`` (their save/load helpers left out), ``TransE``, ``RotatE``,
    ``MarginLoss``, ``SigmoidLoss`` and the ``NegativeSampling`` strategy: ``(TransE, RotatE, MarginLoss,
    SigmoidLoss, NegativeSampling)``."""

    class BaseModule(nn.Module):
        def __init__(self):
            super(BaseModule, self).__init__()
            self.zero_const = nn.Parameter(torch.Tensor([0]))
            self.zero_const.requires_grad = False
            self.pi_const = nn.Parameter(torch.Tensor([3.14159265358979323846]))
            self.pi_const.requires_grad = False

    class Model(BaseModule):
        def __init__(self, ent_tot, rel_tot):
            super(Model, self).__init__()
            self.ent_tot = ent_tot
            self.rel_tot = rel_tot

        def forward(self):
            raise NotImplementedError

        def predict(self):
            raise NotImplementedError

    class TransE(Model):
        def __init__(self, ent_tot, rel_tot, dim = 100, p_norm = 1, norm_flag = True, margin = None, epsilon = None):
            super(TransE, self).__init__(ent_tot, rel_tot)

            self.dim = dim
            self.margin = margin
            self.epsilon = epsilon
            self.norm_flag = norm_flag
            self.p_norm = p_norm

            self.ent_embeddings = nn.Embedding(self.ent_tot, self.dim)
            self.rel_embeddings = nn.Embedding(self.rel_tot, self.dim)

            if margin == None or epsilon == None:
                nn.init.xavier_uniform_(self.ent_embeddings.weight.data)
                nn.init.xavier_uniform_(self.rel_embeddings.weight.data)
            else:
                self.embedding_range = nn.Parameter(
                    torch.Tensor([(self.margin + self.epsilon) / self.dim]), requires_grad=False
                )
                nn.init.uniform_(
                    tensor = self.ent_embeddings.weight.data,
                    a = -self.embedding_range.item(),
                    b = self.embedding_range.item()
                )
                nn.init.uniform_(
                    tensor = self.rel_embeddings.weight.data,
                    a= -self.embedding_range.item(),
                    b= self.embedding_range.item()
                )

            if margin != None:
                self.margin = nn.Parameter(torch.Tensor([margin]))
                self.margin.requires_grad = False
                self.margin_flag = True
            else:
                self.margin_flag = False

        def _calc(self, h, t, r, mode):
            if self.norm_flag:
                h = F.normalize(h, 2, -1)
                r = F.normalize(r, 2, -1)
                t = F.normalize(t, 2, -1)
            if mode != 'normal':
                h = h.view(-1, r.shape[0], h.shape[-1])
                t = t.view(-1, r.shape[0], t.shape[-1])
                r = r.view(-1, r.shape[0], r.shape[-1])
            if mode == 'head_batch':
                score = h + (r - t)
            else:
                score = (h + r) - t
            score = torch.norm(score, self.p_norm, -1).flatten()
            return score

        def forward(self, data):
            batch_h = data['batch_h']
            batch_t = data['batch_t']
            batch_r = data['batch_r']
            mode = data['mode']
            h = self.ent_embeddings(batch_h)
            t = self.ent_embeddings(batch_t)
            r = self.rel_embeddings(batch_r)
            score = self._calc(h ,t, r, mode)
            if self.margin_flag:
                return self.margin - score
            else:
                return score

        def regularization(self, data):
            batch_h = data['batch_h']
            batch_t = data['batch_t']
            batch_r = data['batch_r']
            h = self.ent_embeddings(batch_h)
            t = self.ent_embeddings(batch_t)
            r = self.rel_embeddings(batch_r)
            regul = (torch.mean(h ** 2) +
                     torch.mean(t ** 2) +
                     torch.mean(r ** 2)) / 3
            return regul

        def predict(self, data):
            score = self.forward(data)
            if self.margin_flag:
                score = self.margin - score
                return score.cpu().data.numpy()
            else:
                return score.cpu().data.numpy()

    class RotatE(Model):
        def __init__(self, ent_tot, rel_tot, dim = 100, margin = 6.0, epsilon = 2.0):
            super(RotatE, self).__init__(ent_tot, rel_tot)

            self.margin = margin
            self.epsilon = epsilon

            self.dim_e = dim * 2
            self.dim_r = dim

            self.ent_embeddings = nn.Embedding(self.ent_tot, self.dim_e)
            self.rel_embeddings = nn.Embedding(self.rel_tot, self.dim_r)

            self.ent_embedding_range = nn.Parameter(
                torch.Tensor([(self.margin + self.epsilon) / self.dim_e]),
                requires_grad=False
            )

            nn.init.uniform_(
                tensor = self.ent_embeddings.weight.data,
                a=-self.ent_embedding_range.item(),
                b=self.ent_embedding_range.item()
            )

            self.rel_embedding_range = nn.Parameter(
                torch.Tensor([(self.margin + self.epsilon) / self.dim_r]),
                requires_grad=False
            )

            nn.init.uniform_(
                tensor = self.rel_embeddings.weight.data,
                a=-self.rel_embedding_range.item(),
                b=self.rel_embedding_range.item()
            )

            self.margin = nn.Parameter(torch.Tensor([margin]))
            self.margin.requires_grad = False

        def _calc(self, h, t, r, mode):
            pi = self.pi_const

            re_head, im_head = torch.chunk(h, 2, dim=-1)
            re_tail, im_tail = torch.chunk(t, 2, dim=-1)

            phase_relation = r / (self.rel_embedding_range.item() / pi)

            re_relation = torch.cos(phase_relation)
            im_relation = torch.sin(phase_relation)

            re_head = re_head.view(-1, re_relation.shape[0], re_head.shape[-1]).permute(1, 0, 2)
            re_tail = re_tail.view(-1, re_relation.shape[0], re_tail.shape[-1]).permute(1, 0, 2)
            im_head = im_head.view(-1, re_relation.shape[0], im_head.shape[-1]).permute(1, 0, 2)
            im_tail = im_tail.view(-1, re_relation.shape[0], im_tail.shape[-1]).permute(1, 0, 2)
            im_relation = im_relation.view(-1, re_relation.shape[0], im_relation.shape[-1]).permute(1, 0, 2)
            re_relation = re_relation.view(-1, re_relation.shape[0], re_relation.shape[-1]).permute(1, 0, 2)

            if mode == "head_batch":
                re_score = re_relation * re_tail + im_relation * im_tail
                im_score = re_relation * im_tail - im_relation * re_tail
                re_score = re_score - re_head
                im_score = im_score - im_head
            else:
                re_score = re_head * re_relation - im_head * im_relation
                im_score = re_head * im_relation + im_head * re_relation
                re_score = re_score - re_tail
                im_score = im_score - im_tail

            score = torch.stack([re_score, im_score], dim = 0)
            score = score.norm(dim = 0).sum(dim = -1)
            return score.permute(1, 0).flatten()

        def forward(self, data):
            batch_h = data['batch_h']
            batch_t = data['batch_t']
            batch_r = data['batch_r']
            mode = data['mode']
            h = self.ent_embeddings(batch_h)
            t = self.ent_embeddings(batch_t)
            r = self.rel_embeddings(batch_r)
            score = self.margin - self._calc(h ,t, r, mode)
            return score

        def predict(self, data):
            score = -self.forward(data)
            return score.cpu().data.numpy()

        def regularization(self, data):
            batch_h = data['batch_h']
            batch_t = data['batch_t']
            batch_r = data['batch_r']
            h = self.ent_embeddings(batch_h)
            t = self.ent_embeddings(batch_t)
            r = self.rel_embeddings(batch_r)
            regul = (torch.mean(h ** 2) +
                     torch.mean(t ** 2) +
                     torch.mean(r ** 2)) / 3
            return regul

    class Loss(BaseModule):
        def __init__(self):
            super(Loss, self).__init__()

    class MarginLoss(Loss):
        def __init__(self, adv_temperature = None, margin = 6.0):
            super(MarginLoss, self).__init__()
            self.margin = nn.Parameter(torch.Tensor([margin]))
            self.margin.requires_grad = False
            if adv_temperature != None:
                self.adv_temperature = nn.Parameter(torch.Tensor([adv_temperature]))
                self.adv_temperature.requires_grad = False
                self.adv_flag = True
            else:
                self.adv_flag = False

        def get_weights(self, n_score):
            return F.softmax(-n_score * self.adv_temperature, dim = -1).detach()

        def forward(self, p_score, n_score):
            if self.adv_flag:
                return (self.get_weights(n_score) * torch.max(p_score - n_score, -self.margin)).sum(dim = -1).mean() + self.margin
            else:
                return (torch.max(p_score - n_score, -self.margin)).mean() + self.margin

        def predict(self, p_score, n_score):
            score = self.forward(p_score, n_score)
            return score.cpu().data.numpy()

    class SigmoidLoss(Loss):
        def __init__(self, adv_temperature = None):
            super(SigmoidLoss, self).__init__()
            self.criterion = nn.LogSigmoid()
            if adv_temperature != None:
                self.adv_temperature = nn.Parameter(torch.Tensor([adv_temperature]))
                self.adv_temperature.requires_grad = False
                self.adv_flag = True
            else:
                self.adv_flag = False

        def get_weights(self, n_score):
            return F.softmax(n_score * self.adv_temperature, dim = -1).detach()

        def forward(self, p_score, n_score):
            if self.adv_flag:
                return -(self.criterion(p_score).mean() + (self.get_weights(n_score) * self.criterion(-n_score)).sum(dim = -1).mean()) / 2
            else:
                return -(self.criterion(p_score).mean() + self.criterion(-n_score).mean()) / 2

        def predict(self, p_score, n_score):
            score = self.forward(p_score, n_score)
            return score.cpu().data.numpy()

    class Strategy(BaseModule):
        def __init__(self):
            super(Strategy, self).__init__()

    class NegativeSampling(Strategy):
        def __init__(self, model = None, loss = None, batch_size = 256, regul_rate = 0.0, l3_regul_rate = 0.0):
            super(NegativeSampling, self).__init__()
            self.model = model
            self.loss = loss
            self.batch_size = batch_size
            self.regul_rate = regul_rate
            self.l3_regul_rate = l3_regul_rate

        def _get_positive_score(self, score):
            positive_score = score[:self.batch_size]
            positive_score = positive_score.view(-1, self.batch_size).permute(1, 0)
            return positive_score

        def _get_negative_score(self, score):
            negative_score = score[self.batch_size:]
            negative_score = negative_score.view(-1, self.batch_size).permute(1, 0)
            return negative_score

        def forward(self, data):
            score = self.model(data)
            p_score = self._get_positive_score(score)
            n_score = self._get_negative_score(score)
            loss_res = self.loss(p_score, n_score)
            if self.regul_rate != 0:
                loss_res += self.regul_rate * self.model.regularization(data)
            if self.l3_regul_rate != 0:
                loss_res += self.l3_regul_rate * self.model.l3_regularization()
            return loss_res

    return TransE, RotatE, MarginLoss, SigmoidLoss, NegativeSampling


def openke_batches(steps, seed=0):
    """What OpenKE's C++ ``TrainDataLoader`` (``sampling_mode='cross'``) hands ``Trainer.train_one_step``: NumPy int64
    arrays, the batch's facts first then ``NEGATIVES`` corrupted copies of them, heads corrupted ('head_batch': one
    relation and tail per fact) and tails corrupted ('tail_batch') in turn, and ``batch_y`` (1 then -1)."""
    rng = np.random.default_rng(seed)
    triples = np.array(TRAIN_TRIPLES[:BATCH])
    batches = []
    for step in range(steps):
        mode = "head_batch" if step % 2 == 0 else "tail_batch"
        corrupted = rng.integers(0, ENTITIES, (NEGATIVES, BATCH))
        h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
        batch_h = np.concatenate([h, corrupted.ravel()]) if mode == "head_batch" else h
        batch_t = np.concatenate([t, corrupted.ravel()]) if mode == "tail_batch" else t
        batch_y = np.concatenate([np.ones(BATCH), -np.ones(NEGATIVES * BATCH)]).astype(np.float32)
        batches.append({"batch_h": batch_h, "batch_t": batch_t, "batch_r": r, "batch_y": batch_y, "mode": mode})
    return batches


def openke_trainer(torch):
    """OpenKE's ``openke/config/Trainer.py`` (its checkpointing, GPU and tqdm lines left out): the optimizer chosen by
    name in ``run``, ``train_one_step`` over the loader's NumPy batches by ``Variable(torch.from_numpy(x))``."""
    optim = torch.optim
    Variable = torch.autograd.Variable

    class Trainer(object):
        def __init__(self, model = None, data_loader = None, train_times = 1000, alpha = 0.5, use_gpu = False,
                     opt_method = "sgd"):
            self.work_threads = 8
            self.train_times = train_times
            self.opt_method = opt_method
            self.optimizer = None
            self.lr_decay = 0
            self.weight_decay = 0
            self.alpha = alpha
            self.model = model
            self.data_loader = data_loader
            self.use_gpu = use_gpu
            self.losses = []

        def train_one_step(self, data):
            self.optimizer.zero_grad()
            loss = self.model({
                'batch_h': self.to_var(data['batch_h'], self.use_gpu),
                'batch_t': self.to_var(data['batch_t'], self.use_gpu),
                'batch_r': self.to_var(data['batch_r'], self.use_gpu),
                'batch_y': self.to_var(data['batch_y'], self.use_gpu),
                'mode': data['mode']
            })
            loss.backward()
            self.optimizer.step()
            return loss.item()

        def run(self):
            if self.optimizer != None:
                pass
            elif self.opt_method == "Adagrad" or self.opt_method == "adagrad":
                self.optimizer = optim.Adagrad(
                    self.model.parameters(),
                    lr=self.alpha,
                    lr_decay=self.lr_decay,
                    weight_decay=self.weight_decay,
                )
            elif self.opt_method == "Adadelta" or self.opt_method == "adadelta":
                self.optimizer = optim.Adadelta(
                    self.model.parameters(),
                    lr=self.alpha,
                    weight_decay=self.weight_decay,
                )
            elif self.opt_method == "Adam" or self.opt_method == "adam":
                self.optimizer = optim.Adam(
                    self.model.parameters(),
                    lr=self.alpha,
                    weight_decay=self.weight_decay,
                )
            else:
                self.optimizer = optim.SGD(
                    self.model.parameters(),
                    lr = self.alpha,
                    weight_decay=self.weight_decay,
                )

            for epoch in range(self.train_times):
                res = 0.0
                for data in self.data_loader:
                    loss = self.train_one_step(data)
                    res += loss
                    self.losses.append(loss)

        def to_var(self, x, use_gpu):
            if use_gpu:
                return Variable(torch.from_numpy(x).cuda())
            else:
                return Variable(torch.from_numpy(x))

    return Trainer
