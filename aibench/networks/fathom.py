"""The Fathom reference workloads' networks (Adolf et al., 2016), in PyTorch, following Fathom's TensorFlow
source (github.com/rdadolf/fathom) layer by layer; where that source had a bug or no PyTorch equivalent,
the deviation is named in the class docstring and in docs/fathom.md. The convolutional nets (AlexNet, VGG,
the residual net, DQN, LeNet) are named ``nn.Sequential`` chains, so :class:`~aibench.networks.Layered`;
the others take several inputs or give several outputs.

Imports torch at module level: only the Fathom workloads' tasks (``aibench.workloads.fathom._tasks``) and
the tests import it, lazily.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

# --- ImageNet-style convolutional nets ---------------------------------------------------------------


def _tf_lrn(radius: int = 4) -> nn.LocalResponseNorm:
    """``tf.nn.lrn(x, radius, bias=1, alpha=0.001/9, beta=0.75)`` as torch's LRN: TF's window is 2r+1 wide
    and its alpha multiplies the plain sum, torch's alpha is divided by the window size."""
    size = 2 * radius + 1
    return nn.LocalResponseNorm(size, alpha=0.001 / 9.0 * size, beta=0.75, k=1.0)


def _w(channels: int, width: float) -> int:
    """Channels scaled by the width multiplier (1.0: the original network)."""
    return max(1, round(channels * width))


def alexnet(classes: int = 1001, fc_width: int = 4096, dropout: float = 0.2, width: float = 1.0) -> nn.Sequential:
    """Fathom's AlexNet: conv 11×11/4 64 → maxpool 3/2 → LRN → conv 5×5 192 → maxpool → LRN → conv 3×3 384 →
    256 → 256 → maxpool → fc 4096 → 4096 → 1001 (ReLU after every conv and hidden fc). Convolutions pad as
    TF's 'SAME' does in size (224 → 56 → 27 → 13 → 6), pools are 'VALID'; dropout keeps 0.8 (Fathom's
    ``dropout = 0.8`` keep probability) after fc6 and fc7. Global average pooling to 6×6 makes smaller
    images (the test sizes) give the same fc6 width. ``width`` scales every convolution's channels."""
    c1, c2, c3, c4, c5 = (_w(c, width) for c in (64, 192, 384, 256, 256))
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, c1, 11, stride=4, padding=5)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(3, 2)), ("norm1", _tf_lrn()),
        ("conv2", nn.Conv2d(c1, c2, 5, padding=2)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(3, 2)), ("norm2", _tf_lrn()),
        ("conv3", nn.Conv2d(c2, c3, 3, padding=1)), ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(c3, c4, 3, padding=1)), ("relu4", nn.ReLU()),
        ("conv5", nn.Conv2d(c4, c5, 3, padding=1)), ("relu5", nn.ReLU()),
        ("pool5", nn.MaxPool2d(3, 2)), ("avg", nn.AdaptiveAvgPool2d(6)), ("flatten", nn.Flatten()),
        ("fc6", nn.Linear(c5 * 6 * 6, fc_width)), ("relu6", nn.ReLU()), ("drop6", nn.Dropout(dropout)),
        ("fc7", nn.Linear(fc_width, fc_width)), ("relu7", nn.ReLU()), ("drop7", nn.Dropout(dropout)),
        ("fc8", nn.Linear(fc_width, classes)),
    ]))


# Fathom's vgg.py: block 3 has two convolutions (conv3_1, conv3_2), blocks 4 and 5 three.
VGG_BLOCKS = ((64, 2), (128, 2), (256, 2), (512, 3), (512, 3))


def vgg(classes: int = 1001, fc_width: int = 4096, dropout: float = 0.2, width: float = 1.0) -> nn.Sequential:
    """Fathom's VGG: 3×3 'SAME' convolutions with ReLU in five blocks of (64, 128, 256, 512, 512) channels
    and (2, 2, 2, 3, 3) convolutions (as Fathom's vgg.py builds it), a 2×2 max pool after each block, fc
    4096 → 4096 → classes with dropout keeping 0.8. Fathom applies ReLU to the logits (``relu_layer`` for
    fc8) and initialises with N(0, 0.1), which overflows float32 within a few layers; this model has plain
    logits and PyTorch's default initialisation. ``width`` scales every convolution's channels."""
    layers: list[tuple[str, nn.Module]] = []
    cin = 3
    for b, (channels, reps) in enumerate(VGG_BLOCKS, start=1):
        cout = _w(channels, width)
        for r in range(1, reps + 1):
            layers += [(f"conv{b}_{r}", nn.Conv2d(cin, cout, 3, padding=1)), (f"relu{b}_{r}", nn.ReLU())]
            cin = cout
        layers.append((f"pool{b}", nn.MaxPool2d(2, 2)))
    layers += [("avg", nn.AdaptiveAvgPool2d(7)), ("flatten", nn.Flatten()),
               ("fc6", nn.Linear(cin * 7 * 7, fc_width)), ("relu6", nn.ReLU()), ("drop6", nn.Dropout(dropout)),
               ("fc7", nn.Linear(fc_width, fc_width)), ("relu7", nn.ReLU()), ("drop7", nn.Dropout(dropout)),
               ("fc8", nn.Linear(fc_width, classes))]
    return nn.Sequential(OrderedDict(layers))


RESIDUAL_BLOCKS = ((128, 32), (256, 64), (512, 128), (1024, 256))  # (filters, bottleneck), 3 repeats each


class Bottleneck(nn.Module):
    """Fathom's residual unit: 1×1 → ReLU → 3×3 → ReLU → 1×1 → ReLU, added to the input (no batch norm)."""

    def __init__(self, filters: int, bottleneck: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(filters, bottleneck, 1)
        self.conv_bottleneck = nn.Conv2d(bottleneck, bottleneck, 3, padding=1)
        self.conv_out = nn.Conv2d(bottleneck, filters, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv_in(x))
        y = F.relu(self.conv_bottleneck(y))
        return F.relu(self.conv_out(y)) + x


def residual(classes: int = 1001, repeats: int = 3, width: float = 1.0) -> nn.Sequential:
    """Fathom's residual network: conv 7×7/2 64 + ReLU → maxpool 3/2 → 1×1 conv to 128 → four groups of
    ``repeats`` bottleneck units (filters, bottleneck) = (128, 32), (256, 64), (512, 128), (1024, 256), a 1×1
    projection (no bias) between groups, all at the same resolution (Fathom never downsamples between
    groups) → global average pool → linear (no bias). Initialisation as Fathom: N(0, 0.02). ``width``
    scales every convolution's channels."""
    blocks = [(_w(f, width), _w(b, width)) for f, b in RESIDUAL_BLOCKS]
    c1 = _w(64, width)
    layers: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(3, c1, 7, stride=2, padding=3)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(3, 2, padding=1)), ("conv2", nn.Conv2d(c1, blocks[0][0], 1)),
    ]
    for g, (filters, bottleneck) in enumerate(blocks):
        for r in range(repeats):
            layers.append((f"block{g}_{r}", Bottleneck(filters, bottleneck)))
        if g + 1 < len(blocks):
            layers.append((f"upscale{g}", nn.Conv2d(filters, blocks[g + 1][0], 1, bias=False)))
    layers += [("avg", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
               ("fc", nn.Linear(blocks[-1][0], classes, bias=False))]
    net = nn.Sequential(OrderedDict(layers))
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
            if m.bias is not None:
                nn.init.trunc_normal_(m.bias, std=0.02, a=-0.04, b=0.04)
    return net


# --- variational autoencoder -------------------------------------------------------------------------


class VAE(nn.Module):
    """Fathom's variational autoencoder (after tensorflow/models' autoencoder): linear encoder 784 → (mean,
    log σ²) of a 200-dimensional Gaussian, z = mean + σ·ε, linear decoder 200 → 784. Weights as Fathom:
    Xavier-uniform encoder, zero decoder and biases."""

    def __init__(self, inputs: int = 784, latent: int = 200) -> None:
        super().__init__()
        self.mean = nn.Linear(inputs, latent)
        self.log_var = nn.Linear(inputs, latent)
        self.decode = nn.Linear(latent, inputs)
        for lin in (self.mean, self.log_var):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        nn.init.zeros_(self.decode.weight)
        nn.init.zeros_(self.decode.bias)

    def forward(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, log_var = self.mean(x), self.log_var(x)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu) if sample else mu
        return self.decode(z), mu, log_var


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Per-sample negative ELBO, averaged over the batch: 0.5·‖x̂ − x‖² + KL(q(z|x) ‖ N(0, I)). (Fathom sums
    the reconstruction term over the whole batch but averages the KL term, which weights KL by 1/batch;
    this is the ELBO the model is meant to maximise.)"""
    rec = 0.5 * (recon - x).pow(2).sum(dim=1)
    kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(dim=1)
    return (rec + kl).mean()


# --- end-to-end memory network -----------------------------------------------------------------------


def position_encoding(sentence: int, embedding: int) -> torch.Tensor:
    """MemN2N's position encoding (Sukhbaatar et al. §4.1), [sentence, embedding], as Fathom computes it."""
    ls, le = sentence + 1, embedding + 1
    enc = torch.ones(embedding, sentence)
    for i in range(1, le):
        for j in range(1, ls):
            enc[i - 1, j - 1] = (i - (le - 1) / 2) * (j - (ls - 1) / 2)
    enc = 1 + 4 * enc / embedding / sentence
    return enc.t().contiguous()


class MemN2N(nn.Module):
    """Fathom's end-to-end memory network (Dominique Luna's implementation): embeddings A (memories, also
    used as the output memory) and B (question) with a nil word 0, position encoding, temporal encoding
    TA, ``hops`` hops of attention with u ← H·u + o, answer W·u over the vocabulary. N(0, 0.1) init."""

    def __init__(self, vocab: int, sentence: int, memory: int, embedding: int = 20, hops: int = 3) -> None:
        super().__init__()
        self.A = nn.Embedding(vocab, embedding, padding_idx=0)  # padding_idx: the nil slot gets no gradient
        self.B = nn.Embedding(vocab, embedding, padding_idx=0)
        self.TA = nn.Parameter(torch.empty(memory, embedding))
        self.H = nn.Linear(embedding, embedding, bias=False)
        self.W = nn.Linear(embedding, vocab, bias=False)
        self.hops = hops
        self.register_buffer("encoding", position_encoding(sentence, embedding))
        for p in (self.A.weight, self.B.weight, self.TA, self.H.weight, self.W.weight):
            nn.init.normal_(p, std=0.1)
        with torch.no_grad():
            self.A.weight[0].zero_()
            self.B.weight[0].zero_()

    def forward(self, stories: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        u = (self.B(queries) * self.encoding).sum(dim=1)  # [N, d]
        m = (self.A(stories) * self.encoding).sum(dim=2) + self.TA  # [N, M, d]
        for _ in range(self.hops):
            probs = torch.softmax(torch.einsum("nmd,nd->nm", m, u), dim=1)
            o = torch.einsum("nm,nmd->nd", probs, m)
            u = self.H(u) + o
        return self.W(u)


# --- sequence to sequence ----------------------------------------------------------------------------


class Seq2Seq(nn.Module):
    """Fathom's translation model (TensorFlow's ``embedding_attention_seq2seq``): source and target
    embeddings of width ``size``, a ``layers``-deep LSTM encoder and decoder (the decoder starts from the
    encoder's final state), global attention over the encoder outputs and an output projection to the
    target vocabulary. Deviation: Luong-style attention applied after the decoder LSTM (one batched step
    for the whole sequence) instead of TF's attention fed back into the next decoder input, so the cuDNN /
    oneDNN LSTM runs whole sequences."""

    def __init__(self, source_vocab: int, target_vocab: int, size: int = 256, layers: int = 3) -> None:
        super().__init__()
        self.src_emb = nn.Embedding(source_vocab, size)
        self.tgt_emb = nn.Embedding(target_vocab, size)
        self.encoder = nn.LSTM(size, size, layers, batch_first=True)
        self.decoder = nn.LSTM(size, size, layers, batch_first=True)
        self.attn = nn.Linear(size, size, bias=False)
        self.combine = nn.Linear(2 * size, size)
        self.proj = nn.Linear(size, target_vocab)  # output projection (w, b), shared with the sampled loss

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Attentional hidden states [N, T, size] for teacher-forced decoder inputs (training); the output
        projection is applied by the loss (sampled softmax) so that it is not computed over the whole
        vocabulary."""
        enc, state = self.encoder(self.src_emb(src))
        dec, _ = self.decoder(self.tgt_emb(tgt_in), state)
        return self._attend(enc, dec)

    def _attend(self, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        scores = torch.bmm(self.attn(dec), enc.transpose(1, 2))  # [N, T, S]
        context = torch.bmm(torch.softmax(scores, dim=-1), enc)
        return torch.tanh(self.combine(torch.cat([context, dec], dim=-1)))

    def greedy(self, src: torch.Tensor, steps: int, go: int) -> torch.Tensor:
        """Forward-only decoding as Fathom's forward-only model does (``feed_previous=True``): each step feeds
        the previous step's most likely word, with the full softmax projection."""
        enc, state = self.encoder(self.src_emb(src))
        word = torch.full((src.shape[0], 1), go, dtype=torch.long, device=src.device)
        out = []
        for _ in range(steps):
            dec, state = self.decoder(self.tgt_emb(word), state)
            logits = self.proj(self._attend(enc, dec))
            word = logits.argmax(dim=-1)
            out.append(word)
        return torch.cat(out, dim=1)


def log_uniform_sample(n: int, vocab: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``n`` word ids from TF's log-uniform (Zipfian) candidate sampler, with replacement:
    P(k) = (log(k + 2) − log(k + 1)) / log(vocab + 1)."""
    u = torch.rand(n, generator=generator, device=device)
    return (torch.exp(u * math.log(vocab + 1)) - 1).long().clamp_(0, vocab - 1)


def sampled_softmax_loss(hidden: torch.Tensor, target: torch.Tensor, proj: nn.Linear, sampled: torch.Tensor,
                         vocab: int) -> torch.Tensor:
    """TF's ``sampled_softmax_loss`` (mean over positions): logits of the true word and of the sampled
    candidates, each corrected by the log of its expected count under the sampler (accidental hits are
    not removed)."""
    h = hidden.reshape(-1, hidden.shape[-1])
    t = target.reshape(-1)
    num = sampled.numel()

    def log_q(ids: torch.Tensor) -> torch.Tensor:
        idf = ids.float()
        p = (torch.log(idf + 2) - torch.log(idf + 1)) / math.log(vocab + 1)
        return torch.log(num * p)

    true_logit = (h * proj.weight[t]).sum(-1) + proj.bias[t] - log_q(t)
    sampled_logits = h @ proj.weight[sampled].t() + proj.bias[sampled] - log_q(sampled)
    logits = torch.cat([true_logit.unsqueeze(1), sampled_logits], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(t))


# --- Deep Speech -------------------------------------------------------------------------------------


def clipped_relu(x: torch.Tensor, clip: float = 20.0) -> torch.Tensor:
    return torch.clamp(x, 0.0, clip)


class DeepSpeech(nn.Module):
    """Fathom's Deep Speech (Hannun et al., 2014): three dense layers of ``hidden`` units with the clipped
    ReLU min(max(x, 0), 20), a bidirectional recurrent layer of clipped-ReLU units (forward and backward
    states summed, as in the paper), a dense output layer to ``labels`` (61 phonemes + blank) for CTC.

    The recurrence h_t = min(max(W·x_t + U·h_{t−1} + b, 0), 20) is unrolled in Python, as Fathom's
    TensorFlow graph unrolled it (torch's fused RNN has no clipped ReLU); the input projections of both
    directions are one batched matrix product. Fathom's graph kept only the last time step of the
    bidirectional layer and passed the logits through the clipped ReLU; both are bugs not reproduced."""

    def __init__(self, coeffs: int = 26, hidden: int = 1024, labels: int = 62) -> None:
        super().__init__()
        self.dense = nn.ModuleList([nn.Linear(coeffs, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)])
        self.rnn_in = nn.Linear(hidden, 2 * hidden)  # W (and b) of both directions
        self.rnn_fw = nn.Linear(hidden, hidden, bias=False)  # U, forward
        self.rnn_bw = nn.Linear(hidden, hidden, bias=False)  # U, backward
        self.out = nn.Linear(hidden, labels)
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [T, N, coeffs] → logits [T, N, labels]."""
        for layer in self.dense:
            x = clipped_relu(layer(x))
        proj = self.rnn_in(x)  # [T, N, 2H]
        xf, xb = proj[..., :self.hidden], proj[..., self.hidden:]
        steps = x.shape[0]
        hf = x.new_zeros(x.shape[1], self.hidden)
        hb = x.new_zeros(x.shape[1], self.hidden)
        outs_f, outs_b = [], []
        for t in range(steps):
            hf = clipped_relu(torch.addmm(xf[t], hf, self.rnn_fw.weight.t()))
            hb = clipped_relu(torch.addmm(xb[steps - 1 - t], hb, self.rnn_bw.weight.t()))
            outs_f.append(hf)
            outs_b.append(hb)
        h = torch.stack(outs_f) + torch.stack(outs_b[::-1])
        return self.out(h)


# --- DQN ---------------------------------------------------------------------------------------------


def dqn(actions: int = 4, frames: int = 4) -> nn.Sequential:
    """The Nature DQN network that Fathom's deepq builds: 84×84×4 frames → conv 8×8/4 32 → 4×4/2 64 →
    3×3/1 64 (ReLU) → fc 512 (ReLU) → one Q-value per action. Init as Fathom: N(0, 0.01) weights, 0.1
    biases."""
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(frames, 32, 8, stride=4)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(32, 64, 4, stride=2)), ("relu2", nn.ReLU()),
        ("conv3", nn.Conv2d(64, 64, 3, stride=1)), ("relu3", nn.ReLU()),
        ("flatten", nn.Flatten()), ("fc4", nn.Linear(64 * 7 * 7, 512)), ("relu4", nn.ReLU()),
        ("fc5", nn.Linear(512, actions)),
    ]))
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.constant_(m.bias, 0.1)
    return net


def lenet() -> nn.Sequential:
    """The DIG LeNet of the Tonic Suite (Caffe's MNIST LeNet) up to its logits: the same builder and layer
    names as ``component/dig``, without the service's softmax and argmax layers."""
    from aibench.networks.tonic import dig

    net = dig()
    return nn.Sequential(OrderedDict((name, mod) for name, mod in net.named_children()
                                     if name not in ("prob", "argmax")))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
