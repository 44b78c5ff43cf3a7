"""The Longformer's sliding-window and global attention in a token tagger, tiny, written once for ``torch`` being
torch or kiln: the program of ``test_porting_probes_reformer_performer_longformer.py``, whose docstring says what it
covers."""

from __future__ import annotations

import math

from e2e.reformer_program import SEQ, VOCAB


# ----------------------------------------------------------------------------------------------------------- longformer


def longformer(torch, nn, F, hidden_size=8, num_heads=2, attention_window=4, layers=2, softmax_dtype=None,
               onnx_export=False):
    """Token classifier over ``LongformerSelfAttention`` (HF's local attention, no global tokens) in post-norm layers.
    The reference's ``softmax(attn_scores, dim=-1, dtype=torch.float32)`` is the default here (``softmax_dtype``
    None keeps the scores' dtype, the one line a float64 user changes)."""

    class LongformerSelfAttention(nn.Module):
        def __init__(self, layer_id):
            super().__init__()
            self.num_heads = num_heads
            self.head_dim = int(hidden_size / num_heads)
            self.embed_dim = hidden_size
            self.query = nn.Linear(hidden_size, self.embed_dim)
            self.key = nn.Linear(hidden_size, self.embed_dim)
            self.value = nn.Linear(hidden_size, self.embed_dim)
            self.query_global = nn.Linear(hidden_size, self.embed_dim)
            self.key_global = nn.Linear(hidden_size, self.embed_dim)
            self.value_global = nn.Linear(hidden_size, self.embed_dim)
            self.dropout = 0.0
            self.layer_id = layer_id
            assert attention_window % 2 == 0
            self.one_sided_attn_window_size = attention_window // 2

        def forward(self, hidden_states, attention_mask=None, is_index_masked=None, is_index_global_attn=None,
                    is_global_attn=None):
            hidden_states = hidden_states.transpose(0, 1)

            # project hidden states
            query_vectors = self.query(hidden_states)
            key_vectors = self.key(hidden_states)
            value_vectors = self.value(hidden_states)

            seq_len, batch_size, embed_dim = hidden_states.size()
            assert embed_dim == self.embed_dim

            # normalize query
            query_vectors /= math.sqrt(self.head_dim)

            query_vectors = query_vectors.view(seq_len, batch_size, self.num_heads, self.head_dim).transpose(0, 1)
            key_vectors = key_vectors.view(seq_len, batch_size, self.num_heads, self.head_dim).transpose(0, 1)

            attn_scores = self._sliding_chunks_query_key_matmul(
                query_vectors, key_vectors, self.one_sided_attn_window_size
            )

            # values to pad for attention probs
            remove_from_windowed_attention_mask = (attention_mask != 0)[:, :, None, None]

            # cast to fp32/fp16 then replace 1's with -inf
            float_mask = remove_from_windowed_attention_mask.type_as(query_vectors).masked_fill(
                remove_from_windowed_attention_mask, torch.finfo(query_vectors.dtype).min
            )
            # diagonal mask with zeros everywhere and -inf inplace of padding
            diagonal_mask = self._sliding_chunks_query_key_matmul(
                float_mask.new_ones(size=float_mask.size()), float_mask, self.one_sided_attn_window_size
            )

            # pad local attention probs
            attn_scores += diagonal_mask

            assert list(attn_scores.size()) == [batch_size, seq_len, self.num_heads,
                                                self.one_sided_attn_window_size * 2 + 1]

            # compute local attention probs from global attention keys and contact over window dim
            if is_global_attn:
                # compute global attn indices required through out forward fn
                (
                    max_num_global_attn_indices,
                    is_index_global_attn_nonzero,
                    is_local_index_global_attn_nonzero,
                    is_local_index_no_global_attn_nonzero,
                ) = self._get_global_attn_indices(is_index_global_attn)
                # calculate global attn probs from global key
                global_key_attn_scores = self._concat_with_global_key_attn_probs(
                    query_vectors=query_vectors,
                    key_vectors=key_vectors,
                    max_num_global_attn_indices=max_num_global_attn_indices,
                    is_index_global_attn_nonzero=is_index_global_attn_nonzero,
                    is_local_index_global_attn_nonzero=is_local_index_global_attn_nonzero,
                    is_local_index_no_global_attn_nonzero=is_local_index_no_global_attn_nonzero,
                )
                # concat to local_attn_probs
                # (batch_size, seq_len, num_heads, extra attention count + 2*window+1)
                attn_scores = torch.cat((global_key_attn_scores, attn_scores), dim=-1)

                # free memory
                del global_key_attn_scores

            attn_probs = nn.functional.softmax(attn_scores, dim=-1, dtype=softmax_dtype)

            # softmax sometimes inserts NaN if all positions are masked, replace them with 0
            attn_probs = torch.masked_fill(attn_probs, is_index_masked[:, :, None, None], 0.0)
            attn_probs = attn_probs.type_as(attn_scores)

            # apply dropout
            attn_probs = nn.functional.dropout(attn_probs, p=self.dropout, training=self.training)

            value_vectors = value_vectors.view(seq_len, batch_size, self.num_heads, self.head_dim).transpose(0, 1)

            # compute local attention output with global attention value and add
            if is_global_attn:
                # compute sum of global and local attn
                attn_output = self._compute_attn_output_with_global_indices(
                    value_vectors=value_vectors,
                    attn_probs=attn_probs,
                    max_num_global_attn_indices=max_num_global_attn_indices,
                    is_index_global_attn_nonzero=is_index_global_attn_nonzero,
                    is_local_index_global_attn_nonzero=is_local_index_global_attn_nonzero,
                )
            else:
                # compute local attn only
                attn_output = self._sliding_chunks_matmul_attn_probs_value(
                    attn_probs, value_vectors, self.one_sided_attn_window_size
                )

            assert attn_output.size() == (batch_size, seq_len, self.num_heads, self.head_dim), "Unexpected size"
            attn_output = attn_output.transpose(0, 1).reshape(seq_len, batch_size, embed_dim).contiguous()

            # compute value for global attention and overwrite to attention output
            if is_global_attn:
                global_attn_output, global_attn_probs = self._compute_global_attn_output_from_hidden(
                    hidden_states=hidden_states,
                    max_num_global_attn_indices=max_num_global_attn_indices,
                    is_local_index_global_attn_nonzero=is_local_index_global_attn_nonzero,
                    is_index_global_attn_nonzero=is_index_global_attn_nonzero,
                    is_local_index_no_global_attn_nonzero=is_local_index_no_global_attn_nonzero,
                    is_index_masked=is_index_masked,
                )

                # get only non zero global attn output
                nonzero_global_attn_output = global_attn_output[
                    is_local_index_global_attn_nonzero[0], :, is_local_index_global_attn_nonzero[1]
                ]

                # overwrite values with global attention
                attn_output[is_index_global_attn_nonzero[::-1]] = nonzero_global_attn_output.view(
                    len(is_local_index_global_attn_nonzero[0]), -1
                )
                # The attention weights for tokens with global attention are
                # just filler values, they were never used to compute the output.
                # Fill with 0 now, the correct values are in 'global_attn_probs'.
                attn_probs[is_index_global_attn_nonzero] = 0

            return attn_output.transpose(0, 1)

        @staticmethod
        def _get_global_attn_indices(is_index_global_attn):
            """compute global attn indices required throughout forward pass"""
            # helper variable
            num_global_attn_indices = is_index_global_attn.long().sum(dim=1)

            # max number of global attn indices in batch
            max_num_global_attn_indices = num_global_attn_indices.max()

            # indices of global attn
            is_index_global_attn_nonzero = is_index_global_attn.nonzero(as_tuple=True)

            # helper variable
            is_local_index_global_attn = torch.arange(
                max_num_global_attn_indices, device=is_index_global_attn.device
            ) < num_global_attn_indices.unsqueeze(dim=-1)

            # location of the non-padding values within global attention indices
            is_local_index_global_attn_nonzero = is_local_index_global_attn.nonzero(as_tuple=True)

            # location of the padding values within global attention indices
            is_local_index_no_global_attn_nonzero = (is_local_index_global_attn == 0).nonzero(as_tuple=True)
            return (
                max_num_global_attn_indices,
                is_index_global_attn_nonzero,
                is_local_index_global_attn_nonzero,
                is_local_index_no_global_attn_nonzero,
            )

        def _concat_with_global_key_attn_probs(self, key_vectors, query_vectors, max_num_global_attn_indices,
                                               is_index_global_attn_nonzero, is_local_index_global_attn_nonzero,
                                               is_local_index_no_global_attn_nonzero):
            batch_size = key_vectors.shape[0]

            # create only global key vectors
            key_vectors_only_global = key_vectors.new_zeros(
                batch_size, max_num_global_attn_indices, self.num_heads, self.head_dim
            )

            key_vectors_only_global[is_local_index_global_attn_nonzero] = key_vectors[is_index_global_attn_nonzero]

            # (batch_size, seq_len, num_heads, max_num_global_attn_indices)
            attn_probs_from_global_key = torch.einsum("blhd,bshd->blhs", (query_vectors, key_vectors_only_global))

            # need to transpose since ONNX export only supports consecutive indexing: https://pytorch.org/docs/stable/onnx.html#writes-sets
            attn_probs_from_global_key = attn_probs_from_global_key.transpose(1, 3)
            attn_probs_from_global_key[
                is_local_index_no_global_attn_nonzero[0], is_local_index_no_global_attn_nonzero[1], :, :
            ] = torch.finfo(attn_probs_from_global_key.dtype).min
            attn_probs_from_global_key = attn_probs_from_global_key.transpose(1, 3)

            return attn_probs_from_global_key

        def _compute_attn_output_with_global_indices(self, value_vectors, attn_probs, max_num_global_attn_indices,
                                                     is_index_global_attn_nonzero, is_local_index_global_attn_nonzero):
            batch_size = attn_probs.shape[0]

            # cut local attn probs to global only
            attn_probs_only_global = attn_probs.narrow(-1, 0, max_num_global_attn_indices)
            # get value vectors for global only
            value_vectors_only_global = value_vectors.new_zeros(
                batch_size, max_num_global_attn_indices, self.num_heads, self.head_dim
            )
            value_vectors_only_global[is_local_index_global_attn_nonzero] = value_vectors[is_index_global_attn_nonzero]

            # use `matmul` because `einsum` crashes sometimes with fp16
            # attn = torch.einsum('blhs,bshd->blhd', (selected_attn_probs, selected_v))
            # compute attn output only global
            attn_output_only_global = torch.matmul(
                attn_probs_only_global.transpose(1, 2).clone(), value_vectors_only_global.transpose(1, 2).clone()
            ).transpose(1, 2)

            # reshape attn probs
            attn_probs_without_global = attn_probs.narrow(
                -1, max_num_global_attn_indices, attn_probs.size(-1) - max_num_global_attn_indices
            ).contiguous()

            # compute attn output with global
            attn_output_without_global = self._sliding_chunks_matmul_attn_probs_value(
                attn_probs_without_global, value_vectors, self.one_sided_attn_window_size
            )
            return attn_output_only_global + attn_output_without_global

        def _compute_global_attn_output_from_hidden(self, hidden_states, max_num_global_attn_indices,
                                                    is_local_index_global_attn_nonzero, is_index_global_attn_nonzero,
                                                    is_local_index_no_global_attn_nonzero, is_index_masked):
            seq_len, batch_size = hidden_states.shape[:2]

            # prepare global hidden states
            global_attn_hidden_states = hidden_states.new_zeros(max_num_global_attn_indices, batch_size,
                                                                self.embed_dim)
            global_attn_hidden_states[is_local_index_global_attn_nonzero[::-1]] = hidden_states[
                is_index_global_attn_nonzero[::-1]
            ]

            # global key, query, value
            global_query_vectors_only_global = self.query_global(global_attn_hidden_states)
            global_key_vectors = self.key_global(hidden_states)
            global_value_vectors = self.value_global(hidden_states)

            # normalize
            global_query_vectors_only_global /= math.sqrt(self.head_dim)

            # reshape
            global_query_vectors_only_global = (
                global_query_vectors_only_global.contiguous()
                .view(max_num_global_attn_indices, batch_size * self.num_heads, self.head_dim)
                .transpose(0, 1)
            )  # (batch_size * self.num_heads, max_num_global_attn_indices, head_dim)
            global_key_vectors = (
                global_key_vectors.contiguous().view(-1, batch_size * self.num_heads, self.head_dim).transpose(0, 1)
            )  # batch_size * self.num_heads, seq_len, head_dim)
            global_value_vectors = (
                global_value_vectors.contiguous().view(-1, batch_size * self.num_heads, self.head_dim).transpose(0, 1)
            )  # batch_size * self.num_heads, seq_len, head_dim)

            # compute attn scores
            global_attn_scores = torch.bmm(global_query_vectors_only_global, global_key_vectors.transpose(1, 2))

            assert list(global_attn_scores.size()) == [batch_size * self.num_heads, max_num_global_attn_indices,
                                                       seq_len]

            global_attn_scores = global_attn_scores.view(batch_size, self.num_heads, max_num_global_attn_indices,
                                                         seq_len)

            # need to transpose since ONNX export only supports consecutive indexing: https://pytorch.org/docs/stable/onnx.html#writes-sets
            global_attn_scores = global_attn_scores.transpose(1, 2)
            global_attn_scores[
                is_local_index_no_global_attn_nonzero[0], is_local_index_no_global_attn_nonzero[1], :, :
            ] = torch.finfo(global_attn_scores.dtype).min
            global_attn_scores = global_attn_scores.transpose(1, 2)

            global_attn_scores = global_attn_scores.masked_fill(
                is_index_masked[:, None, None, :],
                torch.finfo(global_attn_scores.dtype).min,
            )

            global_attn_scores = global_attn_scores.view(batch_size * self.num_heads, max_num_global_attn_indices,
                                                         seq_len)

            # compute global attn probs
            global_attn_probs_float = nn.functional.softmax(global_attn_scores, dim=-1, dtype=softmax_dtype)

            global_attn_probs = nn.functional.dropout(
                global_attn_probs_float.type_as(global_attn_scores), p=self.dropout, training=self.training
            )

            # global attn output
            global_attn_output = torch.bmm(global_attn_probs, global_value_vectors)

            assert list(global_attn_output.size()) == [batch_size * self.num_heads, max_num_global_attn_indices,
                                                       self.head_dim]

            global_attn_probs = global_attn_probs.view(batch_size, self.num_heads, max_num_global_attn_indices,
                                                       seq_len)
            global_attn_output = global_attn_output.view(
                batch_size, self.num_heads, max_num_global_attn_indices, self.head_dim
            )
            return global_attn_output, global_attn_probs

        @staticmethod
        def _pad_and_transpose_last_two_dims(hidden_states_padded, padding):
            """pads rows and then flips rows and columns"""
            hidden_states_padded = nn.functional.pad(
                hidden_states_padded, padding
            )  # padding value is not important because it will be overwritten
            hidden_states_padded = hidden_states_padded.view(
                *hidden_states_padded.size()[:-2], hidden_states_padded.size(-1), hidden_states_padded.size(-2)
            )
            return hidden_states_padded

        @staticmethod
        def _pad_and_diagonalize(chunked_hidden_states):
            total_num_heads, num_chunks, window_overlap, hidden_dim = chunked_hidden_states.size()
            chunked_hidden_states = nn.functional.pad(
                chunked_hidden_states, (0, window_overlap + 1)
            )  # total_num_heads x num_chunks x window_overlap x (hidden_dim+window_overlap+1).
            chunked_hidden_states = chunked_hidden_states.view(
                total_num_heads, num_chunks, -1
            )  # total_num_heads x num_chunks x window_overlap*window_overlap+window_overlap
            chunked_hidden_states = chunked_hidden_states[
                :, :, :-window_overlap
            ]  # total_num_heads x num_chunks x window_overlap*window_overlap
            chunked_hidden_states = chunked_hidden_states.view(
                total_num_heads, num_chunks, window_overlap, window_overlap + hidden_dim
            )
            chunked_hidden_states = chunked_hidden_states[:, :, :, :-1]
            return chunked_hidden_states

        @staticmethod
        def _chunk(hidden_states, window_overlap, onnx_export: bool = False):
            """convert into overlapping chunks. Chunk size = 2w, overlap size = w"""
            if onnx_export:  # the reference's slow path, written for torch.onnx.export (no as_strided there)
                chunk_size = [
                    hidden_states.size(0),
                    torch.div(hidden_states.size(1), window_overlap, rounding_mode="trunc") - 1,
                    window_overlap * 2,
                    hidden_states.size(2),
                ]

                overlapping_chunks = torch.empty(chunk_size, device=hidden_states.device)
                for chunk in range(chunk_size[1]):
                    overlapping_chunks[:, chunk, :, :] = hidden_states[
                        :, chunk * window_overlap: chunk * window_overlap + 2 * window_overlap, :
                    ]
                return overlapping_chunks
            # non-overlapping chunks of size = 2w
            hidden_states = hidden_states.view(
                hidden_states.size(0),
                torch.div(hidden_states.size(1), (window_overlap * 2), rounding_mode="trunc"),
                window_overlap * 2,
                hidden_states.size(2),
            )
            # use `as_strided` to make the chunks overlap with an overlap size = window_overlap
            chunk_size = list(hidden_states.size())
            chunk_size[1] = chunk_size[1] * 2 - 1

            chunk_stride = list(hidden_states.stride())
            chunk_stride[1] = chunk_stride[1] // 2
            return hidden_states.as_strided(size=chunk_size, stride=chunk_stride)

        @staticmethod
        def _mask_invalid_locations(input_tensor, affected_seq_len):
            beginning_mask_2d = input_tensor.new_ones(affected_seq_len, affected_seq_len + 1).tril().flip(dims=[0])
            beginning_mask = beginning_mask_2d[None, :, None, :]
            ending_mask = beginning_mask.flip(dims=(1, 3))
            beginning_input = input_tensor[:, :affected_seq_len, :, : affected_seq_len + 1]
            beginning_mask = beginning_mask.expand(beginning_input.size())
            input_tensor[:, :affected_seq_len, :, : affected_seq_len + 1] = torch.full_like(
                beginning_input, -float("inf")
            ).where(beginning_mask.bool(), beginning_input)
            ending_input = input_tensor[:, -affected_seq_len:, :, -(affected_seq_len + 1):]
            ending_mask = ending_mask.expand(ending_input.size())
            input_tensor[:, -affected_seq_len:, :, -(affected_seq_len + 1):] = torch.full_like(
                ending_input, -float("inf")
            ).where(ending_mask.bool(), ending_input)

        def _sliding_chunks_query_key_matmul(self, query, key, window_overlap):
            batch_size, seq_len, num_heads, head_dim = query.size()
            assert (
                seq_len % (window_overlap * 2) == 0
            ), f"Sequence length should be multiple of {window_overlap * 2}. Given {seq_len}"
            assert query.size() == key.size()

            chunks_count = torch.div(seq_len, window_overlap, rounding_mode="trunc") - 1

            # group batch_size and num_heads dimensions into one, then chunk seq_len into chunks of size window_overlap * 2
            query = query.transpose(1, 2).reshape(batch_size * num_heads, seq_len, head_dim)
            key = key.transpose(1, 2).reshape(batch_size * num_heads, seq_len, head_dim)

            query = self._chunk(query, window_overlap, onnx_export)  # getattr(self.config, "onnx_export", False)
            key = self._chunk(key, window_overlap, onnx_export)

            # matrix multiplication
            diagonal_chunked_attention_scores = torch.einsum("bcxd,bcyd->bcxy", (query, key))  # multiply

            # convert diagonals into columns
            diagonal_chunked_attention_scores = self._pad_and_transpose_last_two_dims(
                diagonal_chunked_attention_scores, padding=(0, 0, 0, 1)
            )

            # allocate space for the overall attention matrix where the chunks are combined.
            diagonal_attention_scores = diagonal_chunked_attention_scores.new_zeros(
                (batch_size * num_heads, chunks_count + 1, window_overlap, window_overlap * 2 + 1)
            )

            # copy parts from diagonal_chunked_attention_scores into the combined matrix of attentions
            # - copying the main diagonal and the upper triangle
            diagonal_attention_scores[:, :-1, :, window_overlap:] = diagonal_chunked_attention_scores[
                :, :, :window_overlap, : window_overlap + 1
            ]
            diagonal_attention_scores[:, -1, :, window_overlap:] = diagonal_chunked_attention_scores[
                :, -1, window_overlap:, : window_overlap + 1
            ]
            # - copying the lower triangle
            diagonal_attention_scores[:, 1:, :, :window_overlap] = diagonal_chunked_attention_scores[
                :, :, -(window_overlap + 1): -1, window_overlap + 1:
            ]

            diagonal_attention_scores[:, 0, 1:window_overlap, 1:window_overlap] = diagonal_chunked_attention_scores[
                :, 0, : window_overlap - 1, 1 - window_overlap:
            ]

            # separate batch_size and num_heads dimensions again
            diagonal_attention_scores = diagonal_attention_scores.view(
                batch_size, num_heads, seq_len, 2 * window_overlap + 1
            ).transpose(2, 1)

            self._mask_invalid_locations(diagonal_attention_scores, window_overlap)
            return diagonal_attention_scores

        def _sliding_chunks_matmul_attn_probs_value(self, attn_probs, value, window_overlap):
            batch_size, seq_len, num_heads, head_dim = value.size()

            assert seq_len % (window_overlap * 2) == 0
            assert attn_probs.size()[:3] == value.size()[:3]
            assert attn_probs.size(3) == 2 * window_overlap + 1
            chunks_count = torch.div(seq_len, window_overlap, rounding_mode="trunc") - 1
            # group batch_size and num_heads dimensions into one, then chunk seq_len into chunks of size 2 window overlap

            chunked_attn_probs = attn_probs.transpose(1, 2).reshape(
                batch_size * num_heads,
                torch.div(seq_len, window_overlap, rounding_mode="trunc"),
                window_overlap,
                2 * window_overlap + 1,
            )

            # group batch_size and num_heads dimensions into one
            value = value.transpose(1, 2).reshape(batch_size * num_heads, seq_len, head_dim)

            # pad seq_len with w at the beginning of the sequence and another window overlap at the end
            padded_value = nn.functional.pad(value, (0, 0, window_overlap, window_overlap), value=-1)

            # chunk padded_value into chunks of size 3 window overlap and an overlap of size window overlap
            chunked_value_size = (batch_size * num_heads, chunks_count + 1, 3 * window_overlap, head_dim)
            chunked_value_stride = padded_value.stride()
            chunked_value_stride = (
                chunked_value_stride[0],
                window_overlap * chunked_value_stride[1],
                chunked_value_stride[1],
                chunked_value_stride[2],
            )
            chunked_value = padded_value.as_strided(size=chunked_value_size, stride=chunked_value_stride)

            chunked_attn_probs = self._pad_and_diagonalize(chunked_attn_probs)

            context = torch.einsum("bcwd,bcdh->bcwh", (chunked_attn_probs, chunked_value))
            return context.view(batch_size, num_heads, seq_len, head_dim).transpose(1, 2)

    class LongformerLayer(nn.Module):
        def __init__(self, layer_id):
            super().__init__()
            self.self = LongformerSelfAttention(layer_id)
            self.dense = nn.Linear(hidden_size, hidden_size)
            self.LayerNorm = nn.LayerNorm(hidden_size, eps=1e-5)
            self.intermediate = nn.Linear(hidden_size, 4 * hidden_size)
            self.output = nn.Linear(4 * hidden_size, hidden_size)
            self.output_norm = nn.LayerNorm(hidden_size, eps=1e-5)

        def forward(self, hidden_states, attention_mask, is_index_masked, is_index_global_attn, is_global_attn):
            attention = self.self(hidden_states, attention_mask, is_index_masked, is_index_global_attn, is_global_attn)
            hidden_states = self.LayerNorm(self.dense(attention) + hidden_states)
            intermediate = F.gelu(self.intermediate(hidden_states))
            return self.output_norm(self.output(intermediate) + hidden_states)

    class LongformerTagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(VOCAB, hidden_size, padding_idx=1)
            self.position_embeddings = nn.Embedding(SEQ, hidden_size)
            self.layer = nn.ModuleList([LongformerLayer(i) for i in range(layers)])
            self.classifier = nn.Linear(hidden_size, 3)

        def forward(self, input_ids, attention_mask, is_global_attn=None):
            # LongformerModel: 0 masked, 1 local, 2 global; the layers see -10000 at masked positions, 0 at local
            # ones, 10000 at global ones (LongformerEncoder's is_index_masked, is_index_global_attn, is_global_attn)
            extended_attention_mask = (1.0 - attention_mask[:, :].to(self.classifier.weight.dtype)) * -10000.0
            is_index_masked = extended_attention_mask < 0
            is_index_global_attn = extended_attention_mask > 0
            if is_global_attn is None:  # given: a deployment that knows (the ONNX export of a local model)
                is_global_attn = is_index_global_attn.flatten().any().item()
            positions = torch.arange(input_ids.shape[1])[None, :].expand_as(input_ids)
            hidden_states = self.word_embeddings(input_ids) + self.position_embeddings(positions)
            for layer in self.layer:
                hidden_states = layer(hidden_states, extended_attention_mask, is_index_masked, is_index_global_attn,
                                      is_global_attn)
            return self.classifier(hidden_states)

    return LongformerTagger()


def longformer_as_written(torch, nn, F):
    """The reference's ``softmax(attn_scores, dim=-1, dtype=torch.float32)``, for the float32 run."""
    return longformer(torch, nn, F, softmax_dtype=torch.float32)
