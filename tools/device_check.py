"""Does vitscope give the same answers on a device (a GPU) as on the CPU?  ``make device-check`` (DEVICE=cuda).

    python tools/device_check.py --device cuda       # about 20 s on one H100 after torch's import
    python tools/device_check.py --device cpu        # CPU against CPU: a dry run, every line must PASS

Runs the library's real paths twice, on ``--device`` and on the CPU, and compares: extraction of the shipped
``zoo-mae`` on a small synthetic twin (pooled tokens, Gram matrices, attention distance), the CKA, attention and
k-NN kernels, a linear probe, and a quick zoo training run. One line per check: ``PASS|FAIL|ERROR name
max_abs_diff tol seconds``; FAIL is a finding (a wrong answer, or a result that left the device asked for), ERROR
a step that raised. Exit code 0 only if every check passes. Nothing is read from or written to the repo's cache:
everything lives in a temporary folder, removed at the end. The tolerances are the named constants below, each
with its reason. Measured on one H100 (torch 2.11, cuDNN TF32 on): 19 of 19 pass; the largest extraction
difference is 5e-4 on pooled features (TF32 in the patch-embedding convolution).
"""
import argparse
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

TMP = Path(tempfile.mkdtemp(prefix="device_check-"))
os.environ["VITSCOPE_CACHE"] = str(TMP / "cache")        # never read or write the repo's cache/
os.environ["VITSCOPE_DATA"] = str(TMP / "data")
import torch  # noqa: E402  (after the environment: vitscope resolves its paths from it)

#: Extraction: cuDNN runs the patch-embedding conv in TF32 by default (10-bit mantissa, ~1e-3 relative), then 6 blocks.
EXTRACT_RTOL = 1e-2
#: Minibatch CKA of a layer's device Grams against its CPU Grams: same representation, so 1 up to TF32 noise.
EXTRACT_CKA_TOL = 1e-3
#: CKA on float32 device input vs float64 CPU: the kernel computes in float64, the input rounding is ~6e-8.
CKA_RTOL = 1e-4
#: gram_tokens multiplies float32 chunks (then recombines in float64): float32 accumulation over T*C terms.
GRAM_RTOL = 1e-4
#: Attention distance/entropy: row sums in float32 over G*G keys, then float64; relative to the value.
ATTN_RTOL = 1e-5
#: k-NN and probes: float32 vs float64 (k-NN) or non-deterministic CUDA reductions (probe) may flip one near-tie.
MAX_FLIPPED_EXAMPLES = 1


class Finding(Exception):
    """A wrong answer or a silent move to CPU: reported as FAIL."""


def sync(dev):
    if torch.device(dev).type == "cuda":
        torch.cuda.synchronize()


def on_device(t, dev, what):
    if torch.device(t.device).type != torch.device(dev).type:
        raise Finding(f"{what} is on {t.device}, asked for {dev} (silently moved?)")


def diff(a, b):
    return float((a.detach().cpu().double() - b.detach().cpu().double()).abs().max())


def rel(name, a, b, rtol):
    """(name, max |a-b|, rtol * max |b|): b is the CPU reference."""
    return name, diff(a, b), rtol * float(b.detach().cpu().double().abs().max())


def step_extract(dev):
    from vitscope.data import ImageFolderSubset, eval_transform, load_manifest, transform_key, write_imagefolder_twin
    from vitscope.extract import AttentionDistance, FeatureStore, GramMatrices, PooledTokens, extract, stack_batches
    from vitscope.kernels.cka import minibatch_cka_from_grams
    from vitscope.sections.common import load_for_analysis
    man, n_cls, per_class = load_manifest("imagenet50"), 16, 3                 # 48 images, 3 batches of 16
    root = write_imagefolder_twin(TMP / "twin", man.wnids[:n_cls], per_class, split=man.split, size=96, seed=0,
                                  progress=False)
    out = []
    for i, d in enumerate((dev, "cpu")):
        net, cfg, ident = load_for_analysis("zoo-mae", device=d)
        on_device(next(net.parameters()), d, "load_for_analysis('zoo-mae') weights")
        data = ImageFolderSubset(root, man, transform=eval_transform(cfg.preprocess), per_class=per_class,
                                 num_classes=n_cls)
        products = {"pooled": PooledTokens(), "grams": GramMatrices(tokens="all"), "ad": AttentionDistance()}
        out.append(extract(net, ident, data, products, transform_id=transform_key(cfg.preprocess),
                           store=FeatureStore(TMP / f"store{i}"), device=d, batch_size=16, progress=False,
                           num_workers=0))
        sync(d)
        info = next((TMP / f"store{i}" / "zoo-mae").glob("pooled-*.json")).read_text()
        if f'"device": "{d}"' not in info:
            raise Finding(f"store sidecar does not record device {d}")
    got, ref = out
    checks = [rel(f"extract:{label}.{k}", got[label][k], ref[label][k], EXTRACT_RTOL)
              for label in ("pooled", "ad") for k in ref[label]]
    gd, gc = stack_batches(got["grams"]), stack_batches(ref["grams"])
    checks += [rel(f"extract:grams.batch{j}", a, b, EXTRACT_RTOL) for j, (a, b) in enumerate(zip(gd, gc))]
    self_cka = torch.diagonal(minibatch_cka_from_grams(gd, gc))
    checks.append(("extract:cka(device grams, cpu grams) diag", float((1 - self_cka).abs().max()), EXTRACT_CKA_TOL))
    return checks


def _cluster_data(n, d, classes, gen, scale=3.0):
    y = torch.arange(n) % classes
    centres = torch.randn(classes, d, generator=gen, dtype=torch.float64) * scale
    return centres[y] + torch.randn(n, d, generator=gen, dtype=torch.float64), y


def step_cka(dev):
    from vitscope.kernels import cka
    gen = torch.Generator().manual_seed(0)
    X, R, E = (torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in ((64, 300), (300, 200), (64, 200)))
    Y = X @ R + 5 * E                                                               # related, CKA well inside (0, 1)
    Xd, Yd = X.float().to(dev), Y.float().to(dev)
    checks = []
    for debiased in (False, True):
        r, g = cka.linear_cka(X, Y, debiased=debiased), cka.linear_cka(Xd, Yd, debiased=debiased)
        checks.append((f"cka:linear_cka(debiased={debiased})", abs(g - r), CKA_RTOL * abs(r)))
    layers = [X, Y, X[:, :50]]
    mb = cka.minibatch_cka([t.float().to(dev) for t in layers], [t.float().to(dev) for t in layers], batch_size=16)
    sync(dev)
    on_device(mb, dev, "minibatch_cka result")
    checks.append(rel("cka:minibatch_cka", mb, cka.minibatch_cka(layers, layers, batch_size=16), CKA_RTOL))
    T = torch.randn(16, 50, 64, generator=gen, dtype=torch.float64) + 4.0          # a shared offset, as residuals have
    gt = cka.gram_tokens(T.float().to(dev))
    sync(dev)
    on_device(gt, dev, "gram_tokens result")
    checks.append(rel("cka:gram_tokens", gt, cka.gram(T), GRAM_RTOL))
    return checks


def step_attention(dev):
    from vitscope.kernels import attention
    gen = torch.Generator().manual_seed(1)
    attn = torch.softmax(3 * torch.randn(4, 3, 1 + 49, 1 + 49, generator=gen, dtype=torch.float64), dim=-1)
    ad = attention.attention_distances(attn.float().to(dev), 1, patch_size=16)
    ent = attention.attention_entropy(attn.float().to(dev), 1)
    sync(dev)
    ref = attention.attention_distances(attn, 1, patch_size=16)
    for m, t in ad.items():
        on_device(t, dev, f"attention_distances[{m}]")
    on_device(ent, dev, "attention_entropy")
    return [rel(f"attention:distance.{m}", ad[m], ref[m], ATTN_RTOL) for m in ref] + \
        [rel("attention:entropy", ent, attention.attention_entropy(attn, 1), ATTN_RTOL)]


def step_knn(dev):
    from vitscope.kernels import knn
    gen = torch.Generator().manual_seed(2)
    x, y = _cluster_data(500, 32, 8, gen, scale=0.5)                              # overlapping: accuracy < 1
    (train, ytr), (test, yte) = (x[:400], y[:400]), (x[400:], y[400:])
    pred = knn.weighted_knn(train.float().to(dev), ytr.to(dev), test.float().to(dev), k=20)
    sync(dev)
    on_device(pred, dev, "weighted_knn predictions")
    ref = knn.weighted_knn(train, ytr, test, k=20)
    acc_d = knn.knn_accuracy(train.float().to(dev), ytr.to(dev), test.float().to(dev), yte.to(dev), k=20)
    acc_c = knn.knn_accuracy(train, ytr, test, yte, k=20)
    return [("knn:flipped predictions", float((pred.cpu() != ref).sum()), MAX_FLIPPED_EXAMPLES),
            (f"knn:accuracy*n_test (cpu {acc_c:.3f})", abs(acc_d - acc_c) * len(yte), MAX_FLIPPED_EXAMPLES)]


def step_probe(dev):
    from vitscope.kernels import probes
    gen = torch.Generator().manual_seed(3)
    x, y = _cluster_data(300, 24, 5, gen, scale=0.5)
    (xtr, ytr), (xte, yte) = (x[:200], y[:200]), (x[200:], y[200:])
    accs = []
    for d in (dev, "cpu"):
        probe = probes.fit_linear_probe(xtr.float().to(d), ytr.to(d), num_classes=5, epochs=15, seed=0)
        sync(d)
        on_device(next(probe.parameters()), d, "fit_linear_probe probe")
        accs.append(probes.probe_accuracy(probe, xte.float().to(d), yte.to(d)))
    return [(f"probe:accuracy*n_test (device {accs[0]:.3f}, cpu {accs[1]:.3f})", abs(accs[0] - accs[1]) * len(yte),
             MAX_FLIPPED_EXAMPLES)]


def step_train(dev):
    from vitscope.zoo.train import train_model
    card = train_model("mae", device=dev, quick=True, out_dir=TMP / "zoo-out", cache_dir=TMP / "zoo-cache",
                       progress=False, force=True)
    sync(dev)
    if torch.device(card["device"]).type != torch.device(dev).type:
        raise Finding(f"the card records device {card['device']!r}, asked for {dev}")
    loss = card["final_loss"]
    return [(f"train:mae quick final_loss={loss:.4f} finite", 0.0 if math.isfinite(loss) else math.inf, 0.0)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    dev = parser.parse_args().device
    t_start = time.perf_counter()
    try:                                  # TF32 explains extraction differences of ~1e-3 (see EXTRACT_RTOL)
        gpu = (f" ({torch.cuda.get_device_name()}) cudnn.allow_tf32={torch.backends.cudnn.allow_tf32} "
               f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}") if torch.cuda.is_available() else ""
    except Exception as e:  # noqa: BLE001 (the header must not stop the checks)
        gpu = f" (device query failed: {e})"
    print(f"torch {torch.__version__} cuda_available={torch.cuda.is_available()} device={dev}{gpu} tmp={TMP}",
          flush=True)
    counts = {"PASS": 0, "FAIL": 0, "ERROR": 0}
    for name, fn in (("extract", step_extract), ("cka", step_cka), ("attention", step_attention),
                     ("knn", step_knn), ("probe", step_probe), ("train", step_train)):
        t0 = time.perf_counter()
        try:
            checks = fn(dev)
            secs = time.perf_counter() - t0
            for sub, d, tol in checks:
                status = "PASS" if d <= tol else "FAIL"          # NaN fails too
                counts[status] += 1
                print(f"{status} {sub}  max_abs_diff={d:.3g}  tol={tol:.3g}  seconds={secs:.1f}", flush=True)
        except Finding as e:
            counts["FAIL"] += 1
            print(f"FAIL {name}  max_abs_diff=nan  tol=nan  seconds={time.perf_counter() - t0:.1f}  {e}", flush=True)
        except Exception as e:  # noqa: BLE001 (one broken step must not stop the others)
            counts["ERROR"] += 1
            print(f"ERROR {name}  max_abs_diff=nan  tol=nan  seconds={time.perf_counter() - t0:.1f}  "
                  f"{type(e).__name__}: {e}", flush=True)
            traceback.print_exc(limit=4)
    print(f"device_check: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['ERROR']} errors "
          f"({time.perf_counter() - t_start:.1f} s after imports of torch)", flush=True)
    return 0 if counts["FAIL"] == counts["ERROR"] == 0 else 1


if __name__ == "__main__":
    try:
        code = main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(code)
