#!/usr/bin/env python3
"""Reference values pinned by the golden tests in core/src/overfit.rs.

PBO goldens come from two independent CSCV implementations on PyPI, run on
matrices built from a 64-bit LCG that overfit.rs implements bit for bit (only
integer arithmetic and exactly rounded float + and *, so both sides feed the
same doubles to the statistic):

  * phacker 0.1.0      -- phacker.cscv.cscv_reference (NumPy) and phacker.cscv.cscv
                          (its C++ kernel); Bailey et al. Algorithm 2.3.
  * sharpe-gate 0.1.1  -- sharpe_gate.pbo_cscv (embargo=0); average ranks and a
                          strict lambda < 0, so it is compared only where no ties occur.

Conventions of phacker, which overfit.rs follows: the T rows are cut into S
equal contiguous blocks of T // S rows and the T % S remainder rows at the END
are dropped; the in-sample winner is np.argmax (first index on ties); its OOS
rank is 1 + #(trials with strictly lower OOS Sharpe) (ties rank low); PBO is
the share of combinations with lambda <= 0; Sharpe = mean / std(ddof=1), 0 for
an all-zero slice. The degradation regression and probability of loss are not
computed by either package; they are computed below with NumPy from phacker's
own per-combination choice of the in-sample winner (np.polyfit, degree 1).

Also printed: mpmath (and scipy) references for the normal CDF/PPF, scipy's sample
moments, the PSR/DSR paper examples (inputs as printed in the papers) and a DSR
computed from returns.

Run (numbers printed as Rust literals; versions asserted below):
    python3 -m venv /tmp/pbo-ref
    /tmp/pbo-ref/bin/pip install phacker==0.1.0 sharpe-gate==0.1.1 numpy==2.4.6 scipy==1.17.1 \
        mpmath==1.4.1
    /tmp/pbo-ref/bin/python ops/goldens/pbo_reference.py
"""

from importlib.metadata import version
from itertools import combinations

import mpmath as mp
import numpy as np
import scipy.stats as ss
from phacker.cscv import cscv, cscv_reference
from phacker.cscv import sharpe as phacker_sharpe
from sharpe_gate import pbo_cscv as sharpe_gate_pbo

assert version("phacker") == "0.1.0", version("phacker")
assert version("sharpe-gate") == "0.1.1", version("sharpe-gate")
assert version("mpmath") == "1.4.1", version("mpmath")

MASK = (1 << 64) - 1


class Lcg:
    """Knuth's MMIX LCG; uniform() takes the top 53 bits, exact in a double."""

    def __init__(self, seed):
        self.state = seed & MASK

    def next_u64(self):
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) & MASK
        return self.state

    def uniform(self):
        return (self.next_u64() >> 11) / 9007199254740992.0  # 2**53

    def noise(self):
        # Irwin-Hall(4) centred: the same left-to-right float additions as Rust.
        u1, u2, u3, u4 = self.uniform(), self.uniform(), self.uniform(), self.uniform()
        return ((u1 + u2) + u3) + u4 - 2.0


def matrix_a():
    """T=1000 x N=24; drift (n % 5) * 1e-4 on 0.01-scale noise; S=16 drops 8 rows."""
    rng = Lcg(20240607)
    t, n = 1000, 24
    m = np.empty((t, n))
    for i in range(t):
        for j in range(n):
            m[i, j] = 0.01 * rng.noise() + (j % 5) * 1e-4
    return m


def matrix_b():
    """T=50 x N=7 with exact ties: trial 4 copies trial 3 (the best drift), trial 5 is all zeros,
    trial 6 copies trial 2. N odd, so lambda = 0 occurs. S=6 drops 2 rows."""
    rng = Lcg(7)
    t = 50
    m = np.zeros((t, 7))
    for i in range(t):
        for j in range(4):
            m[i, j] = 0.01 * rng.noise() + j * 1e-3
    m[:, 4] = m[:, 3]
    m[:, 6] = m[:, 2]
    return m


def extras(m, s):
    """Degradation regression and P(OOS loss) from phacker's winner per combination."""
    t, _ = m.shape
    blocks = np.array_split(np.arange(t - t % s), s)
    is_sr, oos_sr = [], []
    for c in combinations(range(s), s // 2):
        is_rows = np.concatenate([blocks[i] for i in c])
        oos_rows = np.concatenate([blocks[i] for i in range(s) if i not in c])
        r = phacker_sharpe(m[is_rows])
        rb = phacker_sharpe(m[oos_rows])
        k = int(np.argmax(r))
        is_sr.append(r[k])
        oos_sr.append(rb[k])
    is_sr, oos_sr = np.array(is_sr), np.array(oos_sr)
    slope, intercept = np.polyfit(is_sr, oos_sr, 1)
    r2 = np.corrcoef(is_sr, oos_sr)[0, 1] ** 2
    return slope, intercept, r2, float(np.mean(oos_sr < 0)), is_sr.mean(), oos_sr.mean()


def report(name, m, s, ties):
    pbo_ref, logits_ref = cscv_reference(m, S=s)
    pbo_cpp, logits_cpp = cscv(m, S=s)
    assert pbo_ref == pbo_cpp and np.allclose(logits_ref, logits_cpp, rtol=0, atol=1e-12)
    sg = sharpe_gate_pbo(m, n_splits=s)
    if not ties:
        assert sg.pbo == pbo_ref and np.allclose(sg.logits, logits_ref, rtol=0, atol=1e-12)
    else:
        # Average ranks and a strict lambda < 0 give a different answer here, which
        # is what makes this matrix a test of the tie convention.
        print(f"// sharpe-gate (average ranks, lambda < 0) gives pbo = {sg.pbo!r}, logits differ: "
              f"{int(np.sum(~np.isclose(np.array(sg.logits), logits_ref)))}")
    slope, intercept, r2, p_loss, mean_is, mean_oos = extras(m, s)
    c = len(logits_ref)
    print(f"// {name}: S={s}, T={m.shape[0]}, N={m.shape[1]}, combinations={c}")
    print(f"pbo = {float(pbo_ref)!r}; n_le_0 = {int((logits_ref <= 0).sum())}")
    print(f"logit_sum = {float(logits_ref.sum())!r}")
    picks = range(c) if c <= 20 else sorted({0, 1, 2, c // 3, c // 2, c - 2, c - 1})
    print("logits = [" + ", ".join(f"({i}, {float(logits_ref[i])!r})" for i in picks) + "]")
    print(f"slope = {float(slope)!r}; intercept = {float(intercept)!r}; r_squared = {float(r2)!r}")
    print(f"prob_oos_loss = {p_loss!r}; mean_is = {float(mean_is)!r}; mean_oos = {float(mean_oos)!r}")
    print(f"m[0][0] = {float(m[0, 0])!r}; m[T-1][N-1] = {float(m[-1, -1])!r}; sum = {float(m.sum())!r}")
    print()


report("matrix_a", matrix_a(), 16, ties=False)
report("matrix_b", matrix_b(), 6, ties=True)
report("matrix_a, S=2", matrix_a(), 2, ties=False)

print("// normal CDF / PPF references: mpmath at 50 digits (scipy alongside; scipy's")
print("// erfc-based ndtr loses ~x^2 * eps relative in the far lower tail, 1e-13 at -37)")
mp.mp.dps = 50
xs = [-37.0, -30.0, -10.0, -5.0, -1.96, -0.5, -1e-10, 0.0, 0.3, 0.6744, 0.7, 1.0,
      2.5, 4.0, 5.6, 6.0, 8.0, 8.5]
print("cdf = [" + ", ".join(f"({x!r}, {float(mp.ncdf(x))!r})" for x in xs) + "]")
print("scipy cdf = [" + ", ".join(f"({x!r}, {float(ss.norm.cdf(x))!r})" for x in xs) + "]")


def mp_ppf(p):
    # Newton on log(Phi(x)) - log(p): stays well scaled down to p = 1e-300.
    return float(mp.findroot(lambda x: mp.log(mp.ncdf(x)) - mp.log(p), float(ss.norm.ppf(p))))


ps = [1e-300, 1e-20, 1e-10, 1e-4, 0.01, 0.02425, 0.025, 0.1, 0.3, 0.5, 0.7, 0.9,
      0.975, 0.97575, 0.99, 0.9999, 1 - 1e-10]
print("ppf = [" + ", ".join(f"({p!r}, {mp_ppf(p)!r})" for p in ps) + "]")
print("scipy ppf = [" + ", ".join(f"({p!r}, {float(ss.norm.ppf(p))!r})" for p in ps) + "]")
sample = [0.012, -0.034, 0.005, 0.021, -0.002, 0.044, -0.071, 0.018, 0.009, -0.013, 0.0]
print(f"sample mean={float(np.mean(sample))!r} std={float(np.std(sample, ddof=1))!r} "
      f"skew={float(ss.skew(sample))!r} kurt={float(ss.kurtosis(sample, fisher=False))!r}")

EULER = 0.5772156649015329


def emax(n, v):
    return np.sqrt(v) * ((1 - EULER) * ss.norm.ppf(1 - 1 / n) + EULER * ss.norm.ppf(1 - 1 / (n * np.e)))


def psr(sr, sr0, t, g3, g4):
    return ss.norm.cdf((sr - sr0) * np.sqrt(t - 1) / np.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))


sr = 2.5 / np.sqrt(250)
for n, g3, g4 in [(100, -3.0, 10.0), (46, -3.0, 10.0), (88, 0.0, 3.0), (89, 0.0, 3.0)]:
    sr0 = emax(n, 0.5 / 250)
    print(f"DSR paper N={n} g3={g3} g4={g4}: sr0={float(sr0)!r} dsr={float(psr(sr, sr0, 1250, g3, g4))!r}")
print(f"PSR frontier paper: {float(psr(1.585 / np.sqrt(12), 0.0, 24, -2.448, 10.164))!r}")

# deflated_sharpe_ratio on returns: the best full-sample trial of matrix_a against
# the Sharpes of all 24 trials (scipy moments, ddof=1 variance of the Sharpes).
ma = matrix_a()
srs = ma.mean(axis=0) / ma.std(axis=0, ddof=1)
best = int(np.argmax(srs))
r = ma[:, best]
v = float(np.var(srs, ddof=1))
g3 = float(ss.skew(r))
g4 = float(ss.kurtosis(r, fisher=False))
sr0 = float(emax(len(srs), v))
print(f"DSR on matrix_a: best={best} sharpe={float(srs[best])!r} variance={v!r} skew={g3!r} "
      f"kurtosis={g4!r} sr0={sr0!r} psr={float(psr(srs[best], 0.0, len(r), g3, g4))!r} "
      f"dsr={float(psr(srs[best], sr0, len(r), g3, g4))!r}")
