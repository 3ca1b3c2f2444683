"""The Tonic Suite applications around the networks: pre-processing, the DNN, post-processing.

Each ``*_task`` function builds an :class:`~aibench.sut.task.InferenceTask` for ``stage``:

- ``dnn``: the network alone on pre-processed tensors (the DjiNN service's view). The sample library holds
  the pre-processed inputs (pre-processing runs once, untimed, while staging).
- ``app``: the whole Tonic application. The library holds raw inputs (encoded images, waveforms, sentence
  strings); ``preprocess`` and ``postprocess`` carry the application's own work so the load generator can
  time each stage (paper Fig. 4).

A sample is one service request as in the paper's Table 3: one image (IMC, FACE, VGG), a request of
``images_per_request`` digits (DIG, 100 in the paper), one utterance (ASR, 548 frames), one sentence (NLP,
28 words). What stands in for what (no trained weights exist offline) is recorded in ``task.data``.

This module imports torch at module level; registry discovery skips it (leading underscore).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from aibench.networks import tonic as tonic_nets
from aibench.sut.task import InferenceTask, default_collate, map_tensors

SEED = 0  # weights, synthetic data, transition scores, embedding tables: all seeded (recorded in task.data)

# Caffe's ImageNet mean pixel (B, G, R) and the per-app input geometry: (resize to, crop to, channels).
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)
IMAGE_GEOMETRY = {"imc": (256, 227), "vgg": (256, 224), "face": (152, 152), "dig": (28, 28)}


# --- shared plumbing -----------------------------------------------------------------------------------

def layered(net: nn.Module) -> nn.Module:
    """The network as its named layers (``InferenceTask.network``): under ``torch.compile``, the original."""
    return getattr(net, "_orig_mod", net)


def prepare_net(name: str, params: dict[str, Any], device: Any, dtype: Any) -> nn.Module:
    """The seeded network on ``device`` in ``dtype``, channels-last and compiled when asked."""
    net = tonic_nets.build(name, seed=SEED, device=device, dtype=dtype)
    if params.get("channels_last"):
        net = net.to(memory_format=torch.channels_last)
    if params.get("compile"):
        net = torch.compile(net)
    return net


def make_to_device(dtype: Any, channels_last: bool = False) -> Callable[[Any, Any], Any]:
    """Move a batch to the device, casting floating tensors to the model's dtype (integer ids stay)."""

    def to_device(batch: Any, device: Any) -> Any:
        def move(t: torch.Tensor) -> torch.Tensor:
            t = t.to(device, non_blocking=True)
            if t.is_floating_point() and t.dtype != dtype:
                t = t.to(dtype)
            if channels_last and t.ndim == 4:
                t = t.contiguous(memory_format=torch.channels_last)
            return t

        return map_tensors(move, batch)

    return to_device


def cat_collate(samples: Sequence[torch.Tensor]) -> torch.Tensor:
    """Requests whose rows all go through the net as one matrix (digits, frames, word windows)."""
    return torch.cat(list(samples))


def list_collate(samples: Sequence[Any]) -> list[Any]:
    return list(samples)


class RowsWithLengths(nn.Module):
    """The app-stage model for row-wise nets: carries the per-request row counts through to post-processing."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {"y": self.net(batch["x"]), "lengths": batch["lengths"]}

    @staticmethod
    def served(network: str) -> dict[str, Any]:
        """InferenceTask fields for a client whose ``network`` is served elsewhere."""

        async def forward(batch: dict[str, Any], call: Any) -> dict[str, Any]:
            return {"y": await call(network, batch["x"]), "lengths": batch["lengths"]}

        return {"served_forward": forward, "served_networks": (network,)}


def counted_flops(names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> float:
    """Mean FLOPs per sample of the networks ``names`` run in sequence, one entry of ``shapes`` per sample
    (a full input shape, or ``(rows,)`` for the row-wise MLPs), counted by
    ``torch.utils.flop_counter.FlopCounterMode`` on meta tensors (same graph, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    nets = [tonic_nets.build(n, device="meta") for n in names]
    cache: dict[tuple[int, ...], float] = {}
    total = 0.0
    for shape in shapes:
        if shape not in cache:
            with FlopCounterMode(display=False) as fc:
                for n, net in zip(names, nets, strict=True):
                    x_shape = (shape[0], tonic_nets.INPUT_SHAPES[n][0]) if len(shape) == 1 else shape
                    net(torch.empty(x_shape, device="meta"))
            cache[shape] = float(fc.get_total_flops())
        total += cache[shape]
    return total / max(1, len(shapes))


FLOPS_NOTE = ("counted with torch.utils.flop_counter.FlopCounterMode over the network on meta tensors, mean over "
              "the sample library; matmul/conv/bmm only (2 per multiply-add): pooling, LRN, activations, "
              "softmax and the application's pre/post-processing are not counted")


# --- images: IMC, VGG, FACE, DIG ------------------------------------------------------------------------

def image_preprocess_one(app: str, data: bytes | np.ndarray) -> torch.Tensor:
    """Caffe-style input transform: decode, resize (and centre-crop), RGB→BGR, mean subtraction → float CHW.
    DIG: decode grey, scale by 1/256 as Caffe's LeNet does."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as F

    resize, crop = IMAGE_GEOMETRY[app]
    if isinstance(data, np.ndarray):
        raw = torch.from_numpy(data)
    else:
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if app == "dig":
        img = decode_image(raw, mode=ImageReadMode.GRAY)
        if img.shape[-2:] != (28, 28):
            img = F.resize(img, [28, 28], antialias=True)
        return img.float() * 0.00390625
    img = decode_image(raw, mode=ImageReadMode.RGB)
    img = F.resize(img, [resize, resize], antialias=True)
    if crop != resize:
        img = F.center_crop(img, [crop, crop])
    bgr = img.flip(0).float()
    return bgr - torch.tensor(CAFFE_MEAN_BGR).view(3, 1, 1)


def image_task(app: str, params: dict[str, Any], device: Any, dtype: Any) -> InferenceTask:
    from aibench.datasets import images

    n, stage, mode = params["num_samples"], params["stage"], params["data"]
    if app == "dig":
        per = params["images_per_request"]
        src = images.digits(n * per, mode, SEED)
        raw: list[Any] = [[images.encode(d, "png") for d in src.items[i * per:(i + 1) * per]] for i in range(n)]
    else:
        per = 1
        src = images.faces(n, mode, SEED) if app == "face" else images.photos(n, mode, SEED)
        raw = src.items
    net = prepare_net(app, params, device, dtype)
    to_device = make_to_device(dtype, params.get("channels_last", False))

    def pre_one(sample: Any) -> torch.Tensor:
        if app == "dig":
            return torch.stack([image_preprocess_one(app, b) for b in sample])
        return image_preprocess_one(app, sample)

    def preprocess(batch: list[Any]) -> torch.Tensor:
        return torch.cat([pre_one(s) if app == "dig" else pre_one(s).unsqueeze(0) for s in batch])

    def postprocess(y: torch.Tensor) -> list[Any]:
        ids = y.cpu().tolist()
        if app == "dig":
            return [ids[i:i + per] for i in range(0, len(ids), per)]
        return ids

    flops = counted_flops([app], [(per, *tonic_nets.INPUT_SHAPES[app])])
    data = {**src.info, "stage": stage, "sample": f"a request of {per} digit images" if app == "dig"
            else "one image", "weights": f"seeded random (seed {SEED}); class ids are not meaningful"}
    if stage == "dnn":
        staged = [pre_one(s) for s in raw]
        return InferenceTask(model=net, device=device, num_samples=n, load_sample=staged.__getitem__,
                             collate=cat_collate if app == "dig" else default_collate, to_device=to_device,
                             flops_per_sample=flops, flops_note=FLOPS_NOTE, stage="dnn", data=data,
                             network=layered(net))
    return InferenceTask(model=net, device=device, num_samples=n, load_sample=raw.__getitem__,
                         collate=list_collate, preprocess=preprocess, to_device=to_device,
                         postprocess=postprocess, flops_per_sample=flops, flops_note=FLOPS_NOTE,
                         stage="app", data=data, network=layered(net))


# --- ASR ------------------------------------------------------------------------------------------------

PHONES = ("aa ae ah ao aw ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy p r s sh t th uh uw v w y z zh "
          "sil").split()
N_SENONES = 1706


class AsrFeatures:
    """Audio → 40-dim log-mel filterbank (25 ms window, 10 ms hop, torchaudio) → per-utterance mean and
    variance normalisation → ±5-frame splicing (Kaldi's ``splice-feats``, edges replicated) → [frames, 440]."""

    def __init__(self, sample_rate: int = 16_000) -> None:
        import torchaudio

        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=400, win_length=400,
                                                        hop_length=160, n_mels=40)

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        feats = (self.mel(wave) + 1e-6).log().T  # [T, 40]
        feats = (feats - feats.mean(0)) / (feats.std(0, unbiased=False) + 1e-5)
        padded = torch.cat([feats[:1].expand(5, -1), feats, feats[-1:].expand(5, -1)])
        return padded.unfold(0, 11, 1).transpose(1, 2).reshape(feats.shape[0], 440).contiguous()


class PhoneLoopDecoder:
    """A Viterbi decoder over the senone scores: a stand-in for Kaldi's HMM/WFST decoder.

    The search graph is a *phone loop*: 569 context-dependent units (each mapped to one of 40 phones), each a
    3-state left-to-right HMM (self-loop 0.75, advance 0.25); every state is tied to one of the 1706 senones
    (a seeded map that uses each senone). Any unit may follow any unit (uniform, no lexicon, no language
    model). Scores become scaled log-likelihoods as in hybrid DNN-HMM decoding: log-softmax minus a log
    senone prior (seeded, as the trained prior cannot be had). Exact Viterbi, no beam.
    """

    states_per_unit = 3

    def __init__(self, seed: int = SEED, n_senones: int = N_SENONES) -> None:
        rng = np.random.default_rng(seed)
        self.units = math.ceil(n_senones / self.states_per_unit)
        n_states = self.units * self.states_per_unit
        self.pdf = rng.permutation(np.arange(n_states) % n_senones)  # state → senone, every senone used
        self.unit_phone = rng.integers(0, len(PHONES), self.units)
        prior = rng.dirichlet(np.full(n_senones, 5.0))
        self.log_prior = np.log(prior).astype(np.float32)
        self.log_self, self.log_adv = math.log(0.75), math.log(0.25)
        self.log_entry = -math.log(self.units)

    def loglik(self, scores: torch.Tensor) -> np.ndarray:
        return torch.log_softmax(scores.float(), dim=-1).numpy() - self.log_prior

    def viterbi(self, loglik: np.ndarray) -> list[tuple[int, int]]:
        """The best state path as (unit, state) per frame."""
        t_len, u = loglik.shape[0], self.units
        em = loglik[:, self.pdf].reshape(t_len, u, self.states_per_unit)
        score = np.full((u, self.states_per_unit), -np.inf, dtype=np.float64)
        score[:, 0] = em[0, :, 0] + self.log_entry
        took = np.zeros((t_len, u, self.states_per_unit), dtype=bool)  # True: came by advance/entry
        entry_from = np.zeros(t_len, dtype=np.int64)
        adv = np.empty_like(score)
        for t in range(1, t_len):
            stay = score + self.log_self
            adv[:, 1:] = score[:, :-1] + self.log_adv
            last = score[:, -1] + self.log_adv
            j = int(last.argmax())
            adv[:, 0] = last[j] + self.log_entry
            take = adv > stay
            score = np.where(take, adv, stay) + em[t]
            took[t], entry_from[t] = take, j
        unit, state = np.unravel_index(int(score.argmax()), score.shape)
        unit, state = int(unit), int(state)
        path = [(unit, state)]
        for t in range(t_len - 1, 0, -1):
            if took[t, unit, state]:
                if state == 0:
                    unit, state = int(entry_from[t]), self.states_per_unit - 1
                else:
                    state -= 1
            path.append((unit, state))
        return path[::-1]

    def phones(self, path: list[tuple[int, int]]) -> list[str]:
        """The phone sequence: one phone per unit visit along the path."""
        out: list[str] = []
        prev: tuple[int, int] | None = None
        for unit, state in path:
            if prev is None or (state == 0 and prev != (unit, 0)):
                out.append(PHONES[self.unit_phone[unit]])
            prev = (unit, state)
        return out

    def decode(self, scores: torch.Tensor) -> list[str]:
        return self.phones(self.viterbi(self.loglik(scores)))


def asr_task(params: dict[str, Any], device: Any, dtype: Any) -> InferenceTask:
    from aibench.datasets import speech

    n, stage = params["num_samples"], params["stage"]
    src = speech.utterances(n, params["frames"], params["data"], SEED)
    waves = [torch.from_numpy(w) for w in src.items]
    featurize = AsrFeatures(speech.SAMPLE_RATE)
    decoder = PhoneLoopDecoder()
    net = prepare_net("asr", params, device, dtype)
    to_device = make_to_device(dtype)
    frames = [1 + len(w) // speech.HOP for w in waves]
    flops = counted_flops(["asr"], [(f,) for f in frames])
    data = {**src.info, "stage": stage, "sample": "one utterance (all its frames in one request)",
            "frames_per_sample": frames if len(set(frames)) > 1 else frames[0],
            "features": "40-dim log-mel (torchaudio MelSpectrogram, 25 ms/10 ms) + CMVN + splice ±5 = 440",
            "decoder": "stand-in for Kaldi's WFST decoder: exact Viterbi over a 569-unit × 3-state phone-loop HMM "
                       "tied to the 1706 senones (seeded tying and prior), no lexicon or language model; "
                       "output is a phone sequence",
            "weights": f"seeded random (seed {SEED}); decoded phones are not meaningful"}
    if stage == "dnn":
        staged = [featurize(w) for w in waves]
        return InferenceTask(model=net, device=device, num_samples=n, load_sample=staged.__getitem__,
                             collate=cat_collate, to_device=to_device, flops_per_sample=flops,
                             flops_note=FLOPS_NOTE, stage="dnn", data=data, network=layered(net))

    def preprocess(batch: list[torch.Tensor]) -> dict[str, Any]:
        feats = [featurize(w) for w in batch]
        return {"x": torch.cat(feats), "lengths": [f.shape[0] for f in feats]}

    def postprocess(out: dict[str, Any]) -> list[list[str]]:
        scores = out["y"].float().cpu()
        return [decoder.decode(s) for s in scores.split(out["lengths"])]

    return InferenceTask(model=RowsWithLengths(net), device=device, num_samples=n,
                         load_sample=waves.__getitem__, collate=list_collate, preprocess=preprocess,
                         to_device=to_device, postprocess=postprocess, flops_per_sample=flops,
                         flops_note=FLOPS_NOTE, stage="app", data=data, **RowsWithLengths.served("asr"))


# --- NLP: POS, CHK, NER (SENNA) ---------------------------------------------------------------------------

WINDOW = 5
VOCAB_SIZE, N_CAPS, N_SUFFIXES = 130_000, 5, 455
WORD_DIM, FEAT_DIM = 50, 5
PAD, UNK = 0, 1
GAZ_TYPES = ("loc", "misc", "org", "per")
TAGS = {"pos": tonic_nets.POS_TAGS, "chk": tonic_nets.CHK_TAGS, "ner": tonic_nets.NER_TAGS}
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-'.][A-Za-z0-9]+)*|<unk>|[^\sA-Za-z0-9]")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def caps_type(word: str) -> int:
    """SENNA's capitalisation feature: 1 lower/no letters, 2 initial capital, 3 all capitals, 4 mixed (0 pad)."""
    letters = [c for c in word if c.isalpha()]
    if not letters or all(c.islower() for c in letters):
        return 1
    if all(c.isupper() for c in letters):
        return 3
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return 2
    return 4


def norm_word(word: str) -> str:
    """SENNA looks words up lower-cased with digits replaced by 0."""
    return re.sub(r"[0-9]", "0", word.lower())


def viterbi(emissions: torch.Tensor, lengths: torch.Tensor, init: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """Best tag sequences for a padded batch: ``emissions`` [B, T, K], ``lengths`` [B], ``init`` [K] start
    scores, ``trans`` [K, K] (from, to). Returns [B, T] tag ids (positions past a length repeat the last tag)."""
    b, t_len, k = emissions.shape
    score = init + emissions[:, 0]
    keep = torch.arange(k, device=emissions.device).expand(b, k)
    back = []
    for t in range(1, t_len):
        best, idx = (score.unsqueeze(2) + trans).max(dim=1)
        live = (t < lengths).unsqueeze(1)
        score = torch.where(live, best + emissions[:, t], score)
        back.append(torch.where(live, idx, keep))
    tags = [score.argmax(dim=1)]
    for idx in reversed(back):
        tags.append(idx.gather(1, tags[-1].unsqueeze(1)).squeeze(1))
    return torch.stack(tags[::-1], dim=1)


def viterbi_rows(scores: torch.Tensor, lengths: Sequence[int], init: torch.Tensor, trans: torch.Tensor
                 ) -> list[torch.Tensor]:
    """Viterbi over row-concatenated sentences: ``scores`` [sum(lengths), K] → one tag tensor per sentence."""
    parts = scores.split(list(lengths))
    padded = nn.utils.rnn.pad_sequence(list(parts), batch_first=True)
    lens = torch.tensor(list(lengths), device=scores.device)
    tags = viterbi(padded, lens, init, trans)
    return [tags[i, :n] for i, n in enumerate(lengths)]


class SennaTables:
    """Lookup tables and decoding scores of the three SENNA taggers (seeded: SENNA's trained ones cannot be
    had). The word table has SENNA's 130,000 rows; the word→row dictionary is built from the sample
    library's own words (SENNA's word list is not available), other words map to UNKNOWN."""

    def __init__(self, words: Sequence[str], seed: int = SEED) -> None:
        g = torch.Generator().manual_seed(seed)
        self.word = torch.randn(VOCAB_SIZE, WORD_DIM, generator=g)
        self.caps = torch.randn(N_CAPS, FEAT_DIM, generator=g)
        self.suffix = torch.randn(N_SUFFIXES, FEAT_DIM, generator=g)
        self.postag = torch.randn(tonic_nets.POS_TAGS + 1, FEAT_DIM, generator=g)  # row 0: padding
        self.gaz = {t: torch.randn(3, FEAT_DIM, generator=g) for t in GAZ_TYPES}  # pad / out / in
        self.init = {a: torch.randn(k, generator=g) for a, k in TAGS.items()}
        self.trans = {a: torch.randn(k, k, generator=g) for a, k in TAGS.items()}
        vocab = sorted({norm_word(w) for w in words})[: VOCAB_SIZE - 2]
        self.word_index = {w: i + 2 for i, w in enumerate(vocab)}
        suffixes = sorted({norm_word(w)[-2:] for w in words})[: N_SUFFIXES - 2]
        self.suffix_index = {s: i + 2 for i, s in enumerate(suffixes)}
        from aibench.datasets.text import GAZETTEERS

        self.gazetteers = {t: frozenset(GAZETTEERS[t]) for t in GAZ_TYPES}

    def word_ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.word_index.get(norm_word(w), UNK) for w in tokens]

    def word_feats(self, app: str, tokens: Sequence[str]) -> torch.Tensor:
        """Per-word features without the POS tag: POS word+caps+suffix (60), CHK word+caps (55),
        NER word+caps+4 gazetteers (75)."""
        parts = [self.word[self.word_ids(tokens)], self.caps[[caps_type(w) for w in tokens]]]
        if app == "pos":
            parts.append(self.suffix[[self.suffix_index.get(norm_word(w)[-2:], UNK) for w in tokens]])
        elif app == "ner":
            low = [w.lower() for w in tokens]
            parts += [self.gaz[t][[2 if w in self.gazetteers[t] else 1 for w in low]] for t in GAZ_TYPES]
        return torch.cat(parts, dim=1)

    def pad_feats(self, app: str) -> torch.Tensor:
        parts = [self.word[PAD], self.caps[PAD]]
        if app == "pos":
            parts.append(self.suffix[PAD])
        elif app == "ner":
            parts += [self.gaz[t][PAD] for t in GAZ_TYPES]
        return torch.cat(parts).unsqueeze(0)


def window_index(lengths: Sequence[int]) -> torch.Tensor:
    """[N, 5] rows into the concatenated word features of a batch; N (one past the end) is the padding row."""
    total = sum(lengths)
    out = np.full((total, WINDOW), total, dtype=np.int64)
    start = 0
    half = WINDOW // 2
    for length in lengths:
        pos = np.arange(length)
        for j, off in enumerate(range(-half, half + 1)):
            q = pos + off
            ok = (q >= 0) & (q < length)
            out[start + pos[ok], j] = start + q[ok]
        start += length
    return torch.from_numpy(out)


def windows(feats: torch.Tensor, pad: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """Window-of-5 network inputs [N, 5·d] from per-word features [N, d] and the padding row [1, d]."""
    rows = torch.cat([feats, pad.to(feats.dtype)])
    return rows[win].reshape(win.shape[0], -1)


class ChkPipeline(nn.Module):
    """The CHK application's DNN stage: it first issues a POS request (POS net + Viterbi over POS tags), then
    feeds the POS tags, as a lookup-table feature, with word and capitalisation features to the CHK net."""

    def __init__(self, pos_net: nn.Module, chk_net: nn.Module, tables: SennaTables, device: Any, dtype: Any) -> None:
        super().__init__()
        self.pos_net, self.chk_net = pos_net, chk_net
        self.register_buffer("postag", tables.postag.to(device=device, dtype=dtype))
        self.register_buffer("pos_init", tables.init["pos"].to(device))
        self.register_buffer("pos_trans", tables.trans["pos"].to(device))

    def chk_input(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.chk_features(batch, self.pos_net(batch["pos_x"]).float())

    def chk_features(self, batch: dict[str, Any], pos_scores: torch.Tensor) -> torch.Tensor:
        """The CHK net's input from the POS net's scores (a remote client gets those from the service)."""
        tags = torch.cat(viterbi_rows(pos_scores, batch["lengths"], self.pos_init, self.pos_trans))
        tag_rows = torch.cat([self.postag[tags + 1], self.postag[:1]])  # + the padding row
        feats = torch.cat([batch["chk_words"], tag_rows], dim=1)
        return feats[batch["win"]].reshape(batch["win"].shape[0], -1)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {"y": self.chk_net(self.chk_input(batch)), "lengths": batch["lengths"]}

    def served(self) -> dict[str, Any]:
        """InferenceTask fields for a client of served POS and CHK nets (the original CHK client asks POS
        first, over a second connection)."""

        async def forward(batch: dict[str, Any], call: Any) -> dict[str, Any]:
            pos_scores = await call("pos", batch["pos_x"])
            feats = self.chk_features(batch, pos_scores.float())
            return {"y": await call("chk", feats), "lengths": batch["lengths"]}

        return {"served_forward": forward, "served_networks": ("pos", "chk")}


def nlp_task(app: str, params: dict[str, Any], device: Any, dtype: Any) -> InferenceTask:
    from aibench.datasets import text

    n, stage = params["num_samples"], params["stage"]
    src = text.sentences(n, params["words"], params["data"], SEED)
    sentences = list(src.items)
    token_lists = [tokenize(s) for s in sentences]
    vocab = [w for toks in token_lists for w in toks]
    for words in text.GAZETTEERS.values():
        vocab += list(words)
    tables = SennaTables(vocab)
    to_device = make_to_device(dtype)
    lengths_all = [len(t) for t in token_lists]
    nets = ["pos", "chk"] if app == "chk" and stage == "app" else [app]
    flops = counted_flops(nets, [(L,) for L in lengths_all])
    data = {**src.info, "stage": stage, "sample": "one sentence (all its word windows in one request)",
            "words_per_sample": lengths_all if len(set(lengths_all)) > 1 else lengths_all[0],
            "features": {"pos": "word 50 + caps 5 + suffix 5", "chk": "word 50 + caps 5 + POS tag 5",
                         "ner": "word 50 + caps 5 + 4 gazetteers × 5"}[app] + f", window {WINDOW}",
            "stand_ins": "seeded embedding tables (SENNA's sizes: 130,000 words, 5 caps, 455 suffixes) and tag "
                         "transition scores; word and suffix dictionaries built from the sample library; small "
                         "built-in gazetteers (aibench.datasets.text.GAZETTEERS)",
            "decoder": "exact Viterbi over tag transition scores per sentence",
            "weights": f"seeded random (seed {SEED}); tags are not meaningful"}
    if app == "chk":
        data["chk"] = ("the app stage runs POS first (POS net + POS Viterbi inside the DNN stage) for the POS-tag "
                       "feature; the dnn stage stages CHK inputs with POS tags computed untimed")

    def features(batch: list[str]) -> dict[str, Any]:
        toks = [tokenize(s) for s in batch]
        lengths = [len(t) for t in toks]
        flat = [w for t in toks for w in t]
        win = window_index(lengths)
        if app == "chk":
            pos_x = windows(tables.word_feats("pos", flat), tables.pad_feats("pos"), win)
            chk_words = torch.cat([tables.word_feats("chk", flat), tables.pad_feats("chk")])
            return {"pos_x": pos_x, "chk_words": chk_words, "win": win, "lengths": lengths}
        return {"x": windows(tables.word_feats(app, flat), tables.pad_feats(app), win), "lengths": lengths}

    if app == "chk":
        model: nn.Module = ChkPipeline(prepare_net("pos", params, device, dtype), prepare_net("chk", params, device,
                                                                                                dtype),
                                       tables, device, dtype)
        net = model.chk_net
        served = model.served()
    else:
        net = prepare_net(app, params, device, dtype)
        model = RowsWithLengths(net)
        served = RowsWithLengths.served(app)
    init, trans = tables.init[app], tables.trans[app]

    def postprocess(out: dict[str, Any]) -> list[list[int]]:
        scores = out["y"].float().cpu()
        return [t.tolist() for t in viterbi_rows(scores, out["lengths"], init, trans)]

    if stage == "dnn":
        if app == "chk":  # the CHK net's input needs POS tags: run the POS request while staging (untimed)
            with torch.inference_mode():
                staged = [model.chk_input(to_device(features([s]), device)).cpu() for s in sentences]
        else:
            staged = [features([s])["x"] for s in sentences]
        return InferenceTask(model=net, device=device, num_samples=n, load_sample=staged.__getitem__,
                             collate=cat_collate, to_device=to_device, flops_per_sample=flops,
                             flops_note=FLOPS_NOTE, stage="dnn", data=data, network=layered(net))
    return InferenceTask(model=model, device=device, num_samples=n, load_sample=sentences.__getitem__,
                         collate=list_collate, preprocess=features, to_device=to_device,
                         postprocess=postprocess, flops_per_sample=flops, flops_note=FLOPS_NOTE,
                         stage="app", data=data, **served)


TASKS: dict[str, Callable[[dict[str, Any], Any, Any], InferenceTask]] = {
    "imc": lambda p, d, t: image_task("imc", p, d, t),
    "vgg": lambda p, d, t: image_task("vgg", p, d, t),
    "face": lambda p, d, t: image_task("face", p, d, t),
    "dig": lambda p, d, t: image_task("dig", p, d, t),
    "asr": asr_task,
    "pos": lambda p, d, t: nlp_task("pos", p, d, t),
    "chk": lambda p, d, t: nlp_task("chk", p, d, t),
    "ner": lambda p, d, t: nlp_task("ner", p, d, t),
}
