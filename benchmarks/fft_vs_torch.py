"""kiln.fft (the ``fft`` dialect's ops on real/imaginary pairs, ``frontend/fft.py``) against torch.fft, eagerly, in one run.

    python benchmarks/fft_vs_torch.py                  # 1 thread, float32
    python benchmarks/fft_vs_torch.py --rounds 9 --length 512

Rows: ``rfft`` then ``irfft`` of a (32, 64, L) batch along the last dim, forward only and forward + backward; FNet's
token mixing ``fft(fft(x, dim=-1), dim=-2).real`` on (8, L, 256) with backward; a 1-D FNO spectral conv (rfft, an
einsum with complex weights on 16 modes, irfft) on (16, 32, L) with backward. Times are the median over ``--rounds``
alternating rounds of the mean of ``--calls`` calls (ms per call); the ratio is kiln's over torch's. Both are
O(L log L) per vector (kiln: pocketfft through scipy.fft or np.fft; it was DFT matmuls, O(L^2), before the fft ops);
what remains is eager dispatch per op and the copies between the pairs and one complex array.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--length", type=int, default=128, help="the transformed length L")
    return parser.parse_args()


def cases(lib: Any, length: int) -> dict[str, Callable[[], Any]]:
    """Each case as a call on ``lib`` (kiln or torch), its inputs built once."""
    import numpy as np

    rng = np.random.default_rng(0)
    signal = lib.tensor(rng.standard_normal((32, 64, length)).astype(np.float32), requires_grad=True)
    tokens = lib.tensor(rng.standard_normal((8, length, 256)).astype(np.float32), requires_grad=True)
    field = lib.tensor(rng.standard_normal((16, 32, length)).astype(np.float32), requires_grad=True)
    weights = lib.tensor((rng.random((32, 32, 16)) + 1j * rng.random((32, 32, 16))).astype(np.complex64))

    def spectral_conv() -> Any:
        x_ft = lib.fft.rfft(field)
        out_ft = lib.zeros(16, 32, length // 2 + 1, dtype=lib.cfloat)
        out_ft[:, :, :16] = lib.einsum("bix,iox->box", x_ft[:, :, :16], weights)
        return lib.fft.irfft(out_ft, n=length)

    return {
        "rfft+irfft": lambda: lib.fft.irfft(lib.fft.rfft(signal.detach()), n=length),
        "rfft+irfft, backward": lambda: lib.fft.irfft(lib.fft.rfft(signal), n=length).pow(2).sum().backward(),
        "FNet mixing, backward": lambda: lib.fft.fft(lib.fft.fft(tokens, dim=-1), dim=-2).real.pow(2).sum().backward(),
        "FNO spectral conv, backward": lambda: spectral_conv().pow(2).sum().backward(),
    }


def timed(call: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    args = parse_args()
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    import torch

    import kiln

    torch.set_num_threads(args.threads)
    ours, theirs = cases(kiln, args.length), cases(torch, args.length)
    print(f"L={args.length}, {args.threads} thread(s), ms per call (median of {args.rounds} rounds x {args.calls} calls)")
    print(f"{'case':32s} {'kiln':>9s} {'torch':>9s} {'kiln/torch':>10s}")
    for case in ours:
        ours[case](), theirs[case]()  # warm: kiln's op cache, torch's plans
        kiln_times, torch_times = [], []
        for _ in range(args.rounds):
            kiln_times.append(timed(ours[case], args.calls))
            torch_times.append(timed(theirs[case], args.calls))
        k, t = statistics.median(kiln_times), statistics.median(torch_times)
        print(f"{case:32s} {k:9.2f} {t:9.2f} {k / t:10.2f}")


if __name__ == "__main__":
    main()
