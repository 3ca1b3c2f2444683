"""Training tasks of the Fathom workloads (and the LeNet digit reference): model, optimizer, data staged on
the device, loss, forward-only work and, where real data allows it, a held-out quality target.

Each builder takes ``(params, device, seed)`` and returns an
:class:`aibench.measure.training.TrainingTask`; it knows nothing about timing. Weights and the order of the
batches follow ``seed``; data sets themselves do not (a data set is fixed, like a real one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from aibench.errors import UnavailableError
from aibench.measure.training import Quality, TrainingTask
from aibench.networks import fathom as M
from aibench.workloads.micro.passes import require_memory

IMAGENET = ("ImageNet (224×224 photos, 1000 classes + background) cannot be had offline: seeded synthetic "
            "images and labels, so this workload reports throughput only")
DIGIT_SPLIT_STREAM = 20_160_816  # fixed train/test split of the real digits (not the run's seed)
TEST_FRACTION = 0.2
GRAD_NOISE_STREAM = 40_001  # memnet's gradient noise: the same on every rank (see memnet)
SYNTHETIC_DIGITS = 512  # glyphs drawn for --data synthetic (throughput only: labels are random)


def _data_gen(seed: int, salt: int) -> torch.Generator:
    """A CPU generator for data, independent of the global one that initialises weights."""
    return torch.Generator().manual_seed(seed * 1_000_003 + salt)


def _cycling(batches: list[Any]) -> Callable[[int], Any]:
    n = len(batches)
    return lambda i: batches[i % n]


class EpochBatches:
    """Mini-batches over tensors staged on the device, reshuffled every epoch with a seeded permutation
    (made on the host, one small copy per epoch); the last partial batch of an epoch is dropped."""

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch: int, seed: int, shuffle: bool = True) -> None:
        self.tensors = tensors
        self.n = int(tensors[0].shape[0])
        self.batch = batch
        self.steps = self.n // batch
        if self.steps < 1:
            raise UnavailableError(f"--batch {batch} is larger than the {self.n} training samples")
        self.gen = torch.Generator().manual_seed(seed)
        self.shuffle = shuffle
        self.epoch = -1
        self.order: torch.Tensor | None = None

    def __call__(self, step: int) -> tuple[torch.Tensor, ...]:
        epoch, j = divmod(step, self.steps)
        if epoch != self.epoch:
            perm = torch.randperm(self.n, generator=self.gen) if self.shuffle else torch.arange(self.n)
            self.order = perm.to(self.tensors[0].device, non_blocking=True)
            self.epoch = epoch
        assert self.order is not None
        idx = self.order[j * self.batch:(j + 1) * self.batch]
        return tuple(t.index_select(0, idx) for t in self.tensors)


def _info(name: str, model: nn.Module, optimizer: str, **extra: Any) -> dict[str, Any]:
    return {"model": name, "parameters": M.count_params(model), "optimizer": optimizer, **extra}


def _classify(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def _forward_x(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return model(batch[0])


def _seed_weights(seed: int) -> None:
    """Weights (and dropout masks, later) come from the global generator: seed it here too, so a task built
    outside the runner (a sweep worker, a script) is as repeatable as one built inside it."""
    torch.manual_seed(seed)


# --- image classification on synthetic ImageNet-shaped data -------------------------------------------


def _imagenet_task(name: str, params: dict[str, Any], device: torch.device, seed: int, model: nn.Module,
                   optimizer: Callable[[Any], Any], opt_note: str) -> TrainingTask:
    b, size, classes = params["batch"], params["image_size"], params["classes"]
    n_params = M.count_params(model)
    # weights + grads + Adam's 2 moments, 2 staged batches, and a rough 40 activations of the input size
    require_memory(4 * (4 * n_params + 2 * b * 3 * size * size + 40 * b * 3 * size * size), device)
    g = _data_gen(seed, 1)
    batches = [(torch.randn(b, 3, size, size, generator=g).to(device),
                torch.randint(classes, (b,), generator=g).to(device)) for _ in range(2)]
    model = model.to(device)
    return TrainingTask(
        model=model, forward_loss=_classify, forward=_forward_x, next_batch=_cycling(batches),
        make_optimizer=optimizer, samples_per_batch=b, device=device, throughput_only=IMAGENET,
        data={"source": "synthetic", "name": "seeded N(0, 1) images, uniform labels", "distinct_batches": 2,
              "shape": [3, size, size], "classes": classes},
        info=_info(name, model, opt_note, image_size=size, classes=classes, width=params["width"]))


def alexnet(params: dict[str, Any], device: torch.device, seed: int) -> TrainingTask:
    _seed_weights(seed)
    model = M.alexnet(params["classes"], params["fc_width"], width=params["width"])
    return _imagenet_task("alexnet", params, device, seed, model,
                          lambda p: torch.optim.Adam(p, lr=1e-3), "Adam(lr=1e-3)")


def vgg(params: dict[str, Any], device: torch.device, seed: int) -> TrainingTask:
    _seed_weights(seed)
    model = M.vgg(params["classes"], params["fc_width"], width=params["width"])
    return _imagenet_task("vgg", params, device, seed, model,
                          lambda p: torch.optim.Adam(p, lr=1e-4), "Adam(lr=1e-4)")


def residual(params: dict[str, Any], device: torch.device, seed: int) -> TrainingTask:
    _seed_weights(seed)
    model = M.residual(params["classes"], params["repeats"], params["width"])
    return _imagenet_task("residual", params, device, seed, model,
                          lambda p: torch.optim.Adam(p, lr=1e-2), "Adam(lr=1e-2)")


# --- digits: the LeNet reference and the VAE -----------------------------------------------------------


def _digits(mode: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Real digits split into fixed train/test parts, or seeded synthetic glyphs with random labels."""
    from aibench.datasets import SourceMissing
    from aibench.datasets.images import SKLEARN_DIGITS, digits, sklearn_digits_28

    if mode != "synthetic":
        try:
            x, y = sklearn_digits_28()
            perm = np.random.default_rng(DIGIT_SPLIT_STREAM).permutation(len(y))
            n_test = round(TEST_FRACTION * len(y))
            test, train = perm[:n_test], perm[n_test:]
            return x[train], y[train], x[test], y[test], {
                "source": "real", "name": SKLEARN_DIGITS, "train": len(train), "test": len(test),
                "split": f"fixed permutation (stream {DIGIT_SPLIT_STREAM}), {TEST_FRACTION:.0%} held out"}
        except SourceMissing as exc:
            if mode == "real":
                raise UnavailableError(f"--data real: no real digits here: {exc}") from None
            fallback = f"real digits unavailable ({exc}); using seeded synthetic glyphs with random labels"
    else:
        fallback = None
    s = digits(SYNTHETIC_DIGITS, "synthetic", seed)
    x = np.stack(s.items).astype(np.float32) / 255.0
    y = np.random.default_rng(seed).integers(0, 10, len(x))
    n_train = SYNTHETIC_DIGITS * 3 // 4
    info = {"source": "synthetic", "name": "seeded pen-stroke glyphs, random labels", "train": n_train,
            "test": SYNTHETIC_DIGITS - n_train}
    if fallback:
        info["fallback"] = fallback
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], info


def _need_real(params: dict[str, Any], info: dict[str, Any], what: str) -> None:
    if params.get("ttq") and info["source"] != "real":
        raise UnavailableError(f"--ttq needs the real digits to train to {what} "
                               f"({info.get('fallback') or '--data synthetic was asked for'})")


def _every(params: dict[str, Any], epoch_steps: int) -> int:
    return params["eval_every"] or epoch_steps


def _accuracy(model: nn.Module, inputs: tuple[torch.Tensor, ...], labels: torch.Tensor, chunk: int = 1024
              ) -> float:
    correct = 0
    for i in range(0, labels.shape[0], chunk):
        out = model(*(t[i:i + chunk] for t in inputs))
        correct += int((out.argmax(dim=1) == labels[i:i + chunk]).sum())
    return correct / labels.shape[0]


def lenet(params: dict[str, Any], device: torch.device, seed: int) -> TrainingTask:
    xtr, ytr, xte, yte, info = _digits(params["data"], seed)
    _need_real(params, info, "a test accuracy")
    _seed_weights(seed)
    model = M.lenet().to(device)
    x = torch.from_numpy(xtr).unsqueeze(1).to(device)
    y = torch.from_numpy(ytr).to(device)
    xt, yt = torch.from_numpy(xte).unsqueeze(1).to(device), torch.from_numpy(yte).to(device)
    batches = EpochBatches((x, y), params["batch"], seed)
    quality = Quality(
        "test_accuracy", "fraction", "higher", params["target"], lambda m: _accuracy(m, (xt,), yt),
        _every(params, batches.steps),
        note=f"top-1 accuracy on the {len(yte)} held-out real digits")
    return TrainingTask(
        model=model, forward_loss=_classify, forward=_forward_x, next_batch=batches,
        make_optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
        samples_per_batch=params["batch"], device=device, epoch_steps=batches.steps, quality=quality,
        data=info, info=_info("lenet (Tonic DIG)", model, "SGD(lr=0.05, momentum=0.9, weight_decay=5e-4): "
                              "Caffe's lenet_solver"))


def autoenc(params: dict[str, Any], device: torch.device, seed: int) -> TrainingTask:
    xtr, _, xte, _, info = _digits(params["data"], seed)
    _need_real(params, info, "a reconstruction error")
    xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    # Fathom standard-scales every pixel with the training set's statistics (sklearn's StandardScaler,
    # which leaves constant pixels at scale 1).
    mean, std = xtr.mean(axis=0), xtr.std(axis=0)
    std[std == 0] = 1.0
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    info = {**info, "scaling": "per-pixel standard scaling fitted on the training part"}
    _seed_weights(seed)
    model = M.VAE(xtr.shape[1], params["latent"]).to(device)
    x = torch.from_numpy(xtr.astype(np.float32)).to(device)
    xt = torch.from_numpy(xte.astype(np.float32)).to(device)
    batches = EpochBatches((x,), params["batch"], seed)

    def loss(m: nn.Module, batch: tuple[torch.Tensor]) -> torch.Tensor:
        recon, mu, log_var = m(batch[0])
        return M.vae_loss(recon, batch[0], mu, log_var)

    def forward(m: nn.Module, batch: tuple[torch.Tensor]) -> torch.Tensor:
        return m(batch[0])[0]

    def recon_error(m: nn.Module) -> float:
        recon = m(xt, sample=False)[0]
        return float((recon - xt).pow(2).mean())

    quality = Quality(
        "test_reconstruction_mse", "mse", "lower", params["target"], recon_error, _every(params, batches.steps),
        note=f"mean squared error per pixel of the {len(xte)} held-out real digits, standard-scaled pixels "
             "(1.0 = predicting the mean image), decoding the posterior mean")
    return TrainingTask(
        model=model, forward_loss=loss, forward=forward, next_batch=batches,
        make_optimizer=lambda p: torch.optim.Adam(p, lr=1e-3), samples_per_batch=params["batch"],
        device=device, epoch_steps=batches.steps, quality=quality, data=info,
        info=_info("variational autoencoder", model, "Adam(lr=1e-3)", latent=params["latent"]))


# --- memory network ----------------------------------------------------------------------------------


def memnet(params: dict[str, Any], device: torch.device, seed: int) -> TrainingTask:
    from aibench.datasets.babi import task1

    train, test = task1(params["stories"], params["stories"], params["sentences"])
    _seed_weights(seed)
    vocab, memory, sentence = len(train.vocab), train.stories.shape[1], train.stories.shape[2]
    model = M.MemN2N(vocab, sentence, memory, params["embedding"], params["hops"]).to(device)
    s, q, a = (torch.from_numpy(v).to(device) for v in (train.stories, train.queries, train.answers))
    st, qt, at = (torch.from_numpy(v).to(device) for v in (test.stories, test.queries, test.answers))
    batches = EpochBatches((s, q, a), params["batch"], seed)

    def loss(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return F.cross_entropy(m(batch[0], batch[1]), batch[2], reduction="sum")  # Fathom: reduce_sum

    def forward(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return m(batch[0], batch[1])

    # The noise comes from its own generator on a fixed stream: the hook runs after a data-parallel
    # all-reduce, so every rank must add the same noise or the replicas drift apart (ranks may be given
    # different seeds to draw different batches).
    noise = torch.Generator(device=device).manual_seed(GRAD_NOISE_STREAM)

    def grad_hook(m: nn.Module) -> None:
        # Fathom: clip each gradient to norm 40, add N(0, 1e-3) noise, keep the nil word's gradient zero
        # (the nil rows have padding_idx, so their gradient is already zero; noise must not move them).
        for p in m.parameters():
            if p.grad is None:
                continue
            torch.nn.utils.clip_grad_norm_(p, 40.0)
            p.grad.add_(torch.randn(p.grad.shape, generator=noise, device=p.grad.device, dtype=p.grad.dtype),
                        alpha=1e-3)
        for emb in (getattr(m, "module", m).A, getattr(m, "module", m).B):
            if emb.weight.grad is not None:
                emb.weight.grad[0].zero_()

    quality = Quality(
        "test_accuracy", "fraction", "higher", params["target"], lambda m: _accuracy(m, (st, qt), at),
        _every(params, batches.steps), note=f"answer accuracy on the {len(test)} generated test stories")
    return TrainingTask(
        model=model, forward_loss=loss, forward=forward, next_batch=batches,
        make_optimizer=lambda p: torch.optim.Adam(p, lr=1e-2), samples_per_batch=params["batch"],
        device=device, grad_hook=grad_hook, epoch_steps=batches.steps, quality=quality, data=train.info,
        info=_info("end-to-end memory network", model, "Adam(lr=1e-2), per-gradient norm clip 40, gradient "
                   "noise N(0, 1e-3)", vocabulary=vocab, memory=memory, sentence=sentence))


# --- sequence to sequence ------------------------------------------------------------------------------

GO = 1  # decoder start symbol (ids 0..3 are reserved as in TF's data_utils: PAD, GO, EOS, UNK)


def seq2seq(params: dict[str, Any], device: torch.device, seed: int) -> TrainingTask:
    b, vocab, size = params["batch"], params["vocab"], params["size"]
    src_len, tgt_len = (int(v) for v in params["bucket"].split(","))
    _seed_weights(seed)
    model = M.Seq2Seq(vocab, vocab, size, params["layers"]).to(device)
    g = _data_gen(seed, 2)

    def words(n: int, length: int) -> torch.Tensor:  # Zipf-like word ids, as natural text has
        return (4 + M.log_uniform_sample(n * length, vocab - 4, g, torch.device("cpu"))).view(n, length)

    batches = []
    for _ in range(2):
        src, tgt = words(b, src_len), words(b, tgt_len)
        tgt_in = torch.cat([torch.full((b, 1), GO), tgt[:, :-1]], dim=1)
        batches.append((src.to(device), tgt_in.to(device), tgt.to(device)))
    samples = params["num_samples"]
    sample_gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + 3)

    def loss(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        src, tgt_in, tgt = batch
        hidden = m(src, tgt_in)
        proj = getattr(m, "module", m).proj
        if 0 < samples < vocab:
            sampled = M.log_uniform_sample(samples, vocab, sample_gen, device)
            return M.sampled_softmax_loss(hidden, tgt, proj, sampled, vocab)
        return F.cross_entropy(proj(hidden).reshape(-1, vocab), tgt.reshape(-1))

    def forward(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return getattr(m, "module", m).greedy(batch[0], tgt_len, GO)

    return TrainingTask(
        model=model, forward_loss=loss, forward=forward, next_batch=_cycling(batches),
        make_optimizer=lambda p: torch.optim.SGD(p, lr=0.5), samples_per_batch=b, device=device,
        grad_hook=lambda m: torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0),
        throughput_only="WMT15 en→fr cannot be had offline: seeded Zipf-distributed word ids, so this workload "
                        "reports throughput only",
        data={"source": "synthetic", "name": "seeded log-uniform (Zipfian) word ids", "distinct_batches": 2,
              "bucket": [src_len, tgt_len], "vocabulary": vocab},
        info=_info("seq2seq (3-layer LSTM encoder-decoder, attention)", model, "SGD(lr=0.5), global norm clip 5",
                   loss=f"sampled softmax, {samples} log-uniform samples" if 0 < samples < vocab else
                   "full softmax", infer="greedy decoding, full softmax, feeding back the previous word"),
        notes=["Fathom samples a bucket per step from the data's distribution; here every step uses --bucket"])


# --- Deep Speech ---------------------------------------------------------------------------------------


def speech(params: dict[str, Any], device: torch.device, seed: int) -> TrainingTask:
    b, frames, coeffs, hidden = params["batch"], params["frames"], params["coeffs"], params["hidden"]
    labels, max_labels = 62, params["max_labels"]
    # activations kept for backward: ~8 tensors of [frames, batch, hidden] floats
    require_memory(4 * 10 * frames * b * hidden, device)
    _seed_weights(seed)
    model = M.DeepSpeech(coeffs, hidden, labels).to(device)
    g = _data_gen(seed, 4)
    batches = []
    for _ in range(2):
        x = torch.randn(frames, b, coeffs, generator=g)
        in_len = torch.randint(max(1, frames // 2), frames + 1, (b,), generator=g)
        in_len[0] = frames
        tgt_len = torch.randint(max(1, max_labels // 2), max_labels + 1, (b,), generator=g)
        tgt_len = torch.minimum(tgt_len, in_len)
        tgt = torch.randint(1, labels, (b, max_labels), generator=g)  # 0 is CTC's blank
        batches.append(tuple(t.to(device) for t in (x, tgt, in_len, tgt_len)))

    def loss(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, tgt, in_len, tgt_len = batch
        log_probs = F.log_softmax(m(x), dim=-1)
        return F.ctc_loss(log_probs, tgt, in_len, tgt_len, blank=0, zero_infinity=True)

    return TrainingTask(
        model=model, forward_loss=loss, forward=_forward_x, next_batch=_cycling(batches),
        make_optimizer=lambda p: torch.optim.SGD(p, lr=0.01), samples_per_batch=b, device=device,
        throughput_only="TIMIT is licensed and cannot be had offline: seeded synthetic features and phoneme "
                        "labels, so this workload reports throughput only",
        data={"source": "synthetic", "name": "seeded N(0, 1) feature frames, uniform phoneme labels",
              "distinct_batches": 2, "frames": frames, "coefficients": coeffs, "max_labels": max_labels},
        info=_info("Deep Speech", model, "SGD(lr=0.01)", loss="CTC (mean over the batch, per target length)"))


# --- DQN -----------------------------------------------------------------------------------------------


class Replay:
    """DQN's replay memory on the device: single 84×84 frames in a ring, states made of 4 consecutive
    frames (as Fathom's database stores them), transitions sampled uniformly away from the write point."""

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.frames = torch.zeros(capacity, 84, 84, dtype=torch.uint8, device=device)
        self.actions = torch.zeros(capacity, dtype=torch.long, device=device)
        self.rewards = torch.zeros(capacity, device=device)
        self.terminals = torch.zeros(capacity, device=device)
        self.capacity, self.ptr, self.size = capacity, 0, 0
        self.window = torch.arange(-3, 2, device=device)  # 4 frames of the state + 1 of the next state

    def insert(self, frame: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, terminal: torch.Tensor
               ) -> None:
        i = self.ptr
        self.frames[i] = frame
        self.actions[i] = action
        self.rewards[i] = reward
        self.terminals[i] = terminal
        self.ptr = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        base = self.ptr if self.size == self.capacity else 0  # oldest frame
        offset = torch.randint(0, self.size - 4, (n,), generator=gen, device=self.frames.device)
        idx = (base + 3 + offset) % self.capacity
        win = (idx[:, None] + self.window) % self.capacity
        frames = self.frames[win].float().div_(255.0)  # [n, 5, 84, 84]
        return frames[:, :4], self.actions[idx], self.rewards[idx], self.terminals[idx], frames[:, 1:]


def deepq(params: dict[str, Any], device: torch.device, seed: int) -> TrainingTask:
    b, actions = params["batch"], params["actions"]
    capacity, start, sync = params["replay"], params["replay_start"], params["target_sync"]
    if start < 5 or start > capacity:
        raise UnavailableError(f"--replay-start must be within 5..--replay ({capacity}), got {start}")
    _seed_weights(seed)
    online = M.dqn(actions).to(device)
    target = M.dqn(actions).to(device)
    target.load_state_dict(online.state_dict())
    target.requires_grad_(False)
    g = _data_gen(seed, 5)
    pool = 256  # distinct synthetic frames the environment cycles through
    env_frames = torch.randint(0, 256, (pool, 84, 84), generator=g, dtype=torch.uint8).to(device)
    env_rewards = (torch.rand(pool, generator=g) < 0.05).float().to(device)
    env_terminals = (torch.rand(pool, generator=g) < 0.01).float().to(device)
    replay = Replay(capacity, device)
    dgen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + 6)
    state = {"t": 0}
    eps, gamma = 1.0, 0.99  # Fathom's epsilon starts at 1.0 and decays over 1M steps; discount 0.99

    def env_step(action: torch.Tensor) -> None:
        t = state["t"] % pool
        replay.insert(env_frames[t], action, env_rewards[t], env_terminals[t])
        state["t"] += 1

    for _ in range(start):  # fill the memory with random play (Fathom's train_start): setup, not run
        env_step(torch.randint(actions, (), generator=dgen, device=device))

    def act() -> torch.Tensor:
        """ε-greedy on the current state; Fathom always evaluates the Q-network, even for random moves."""
        t = state["t"]
        s = env_frames[torch.arange(t - 3, t + 1, device=device) % pool].float().div_(255.0).unsqueeze(0)
        with torch.no_grad():
            greedy = online(s).argmax(dim=1)[0]
        explore = torch.rand((), generator=dgen, device=device) < eps
        return torch.where(explore, torch.randint(actions, (), generator=dgen, device=device), greedy)

    def next_batch(step: int) -> tuple[torch.Tensor, ...]:
        env_step(act())
        return replay.sample(b, dgen)

    def loss(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        s, a, r, term, s2 = batch
        with torch.no_grad():
            y = r + (1.0 - term) * gamma * target(s2).max(dim=1).values
        q = m(s).gather(1, a[:, None]).squeeze(1)
        return F.huber_loss(q, y, delta=1.0, reduction="sum")  # Fathom: clip_delta 1, batch_accumulator sum

    def after_step(step: int) -> None:
        if (step + 1) % sync == 0:
            with torch.no_grad():
                for tp, p in zip(target.parameters(), online.parameters(), strict=True):
                    tp.copy_(p)

    if params["mode"] == "infer":
        gi = _data_gen(seed, 7)
        states = [torch.randint(0, 256, (b, 4, 84, 84), generator=gi, dtype=torch.uint8).to(device).float() / 255
                  for _ in range(2)]
        next_b: Callable[[int], Any] = _cycling([(x,) for x in states])
    else:
        next_b = next_batch
    return TrainingTask(
        model=online, forward_loss=loss, forward=lambda m, batch: m(batch[0]).argmax(dim=1), next_batch=next_b,
        make_optimizer=lambda p: torch.optim.RMSprop(p, lr=2.5e-4, alpha=0.95, eps=0.01), samples_per_batch=b,
        device=device, after_step=after_step,
        throughput_only="no Atari emulator or ROMs offline: the environment is a seeded cycle of synthetic "
                        "frames, so this workload reports throughput only",
        data={"source": "synthetic", "name": "seeded random 84×84 frames cycled as an environment",
              "distinct_frames": pool, "replay_capacity": capacity, "replay_start": start},
        info=_info("DQN", online, "RMSProp(lr=2.5e-4, alpha=0.95, eps=0.01)", actions=actions,
                   target_sync_steps=sync, step="act once (ε-greedy, Q-network forward on one state), store "
                   "the transition, learn on a sampled minibatch with the target network"),
        notes=["the emulator's own cost is not part of a step (there is no emulator)",
               f"ε stays {eps} (Fathom decays it over 1M steps), so the acting forward pass always runs"])


BUILDERS: dict[str, Callable[[dict[str, Any], torch.device, int], TrainingTask]] = {
    "alexnet": alexnet, "vgg": vgg, "residual": residual, "autoenc": autoenc, "memnet": memnet,
    "seq2seq": seq2seq, "speech": speech, "deepq": deepq, "lenet": lenet,
}

