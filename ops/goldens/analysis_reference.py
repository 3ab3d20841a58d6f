#!/usr/bin/env python3
"""Reference values pinned by the golden tests in core/src/analysis.rs.

Two daily equity curves shaped like Jesse's (`equity_curve[0]["data"]`: the
starting balance stamped at the first minute, then one sample per day stamped
00:01 UTC of the next day, the last one at 00:00 of the end date), built from
integer-derived daily returns so Rust and Python start from the same doubles.
Everything below is computed with pandas/NumPy/SciPy, independently of the
Rust code: pct_change returns, scipy's biased skew and Pearson kurtosis,
np.percentile (linear) for historical VaR, pandas rolling windows for the
rolling Sharpe, groupby/prod for period returns, cummax for drawdowns and
np.corrcoef for the correlation on common days.

Run with the project venv (numpy 1.26.4, pandas 2.2.3, scipy 1.15.3):
    .venv/bin/python ops/goldens/analysis_reference.py
"""

import numpy as np
import pandas as pd
import scipy.stats as ss

DAY_MS = 86_400_000
START_A = 1_701_388_800_000  # 2023-12-01 00:00 UTC
START_B = START_A + 10 * DAY_MS


def returns_a(k):
    return ((k * 37 + 11) % 23 - 11) / 1000.0


def returns_b(k):
    return ((k * 19 + 5) % 17 - 8) / 1000.0


def curve(start_ms, balance, rets):
    """Jesse-shaped samples: (time_ms, value)."""
    values = [balance]
    for r in rets:
        values.append(values[-1] * (1.0 + r))
    n = len(values)
    times = [start_ms] + [start_ms + i * DAY_MS + 60_000 for i in range(1, n - 1)] + [start_ms + (n - 1) * DAY_MS]
    return times, values


def close_days(times):
    # The balance sampled at the first minute of a day closes the day before.
    return pd.to_datetime([t - 60_000 - 1 for t in times], unit="ms", utc=True).normalize()


times_a, values_a = curve(START_A, 10_000.0, [returns_a(k) for k in range(1, 75)])
# B: its own returns plus half of A's on the same day (a real correlation).
rb = []
for k in range(1, 61):
    rb.append(returns_b(k) + 0.5 * returns_a(k + 10))
times_b, values_b = curve(START_B, 5_000.0, rb)

eq_a = pd.Series(values_a, index=close_days(times_a))
eq_b = pd.Series(values_b, index=close_days(times_b))
r = eq_a.pct_change().dropna()
x = r.to_numpy()

print("// series A")
print("observations", len(x))
print("mean", repr(x.mean()), "std", repr(x.std(ddof=1)))
print("skew", repr(ss.skew(x)), "kurtosis", repr(ss.kurtosis(x, fisher=False)))
print("min", repr(x.min()), "max", repr(x.max()))
for level in (95, 99):
    var = np.percentile(x, 100 - level)
    print(f"var_{level}", repr(var), f"cvar_{level}", repr(x[x <= var].mean()))
sr = x.mean() / x.std(ddof=1)
psr = ss.norm.cdf(sr * np.sqrt(len(x) - 1) / np.sqrt(1 - ss.skew(x) * sr + (ss.kurtosis(x, fisher=False) - 1) / 4 * sr**2))
print("sharpe_daily", repr(sr), "sharpe_annualized", repr(sr * np.sqrt(365)), "psr", repr(psr))
rolling = r.rolling(30).apply(lambda w: w.mean() / w.std(ddof=1) * np.sqrt(365), raw=False).dropna()
print("rolling count", len(rolling), "first", rolling.index[0].date(), repr(rolling.iloc[0]),
      "tenth", repr(rolling.iloc[9]), "last", rolling.index[-1].date(), repr(rolling.iloc[-1]))
monthly = (1 + r).groupby([r.index.year, r.index.month]).prod() - 1
for (year, month), value in monthly.items():
    print("month", f"{year}-{month:02d}", repr(value * 100))
yearly = (1 + r).groupby(r.index.year).prod() - 1
for year, value in yearly.items():
    print("year", year, repr(value * 100))
print("total_return_pct", repr((values_a[-1] / values_a[0] - 1) * 100))

dd = eq_a / eq_a.cummax() - 1
print("max_drawdown_pct", repr(dd.min() * 100))
# Drawdown periods: runs of dd < 0; peak = the day before the run; recovery =
# the first day after it (None when the run reaches the end).
periods = []
underwater = dd < 0
run_id = (underwater != underwater.shift()).cumsum()
for _, run in dd[underwater].groupby(run_id[underwater]):
    first = eq_a.index.get_loc(run.index[0])
    last = eq_a.index.get_loc(run.index[-1])
    peak = eq_a.index[first - 1]
    recovery = eq_a.index[last + 1] if last + 1 < len(eq_a) else None
    periods.append((run.min() * 100, peak.date(), run.idxmin().date(), recovery.date() if recovery is not None else None))
periods.sort(key=lambda p: p[0])
for p in periods[:5]:
    print("drawdown", repr(p[0]), p[1], p[2], p[3])
print("drawdown periods", len(periods))

rets_b = eq_b.pct_change().dropna()
common = r.index.intersection(rets_b.index)
print("// series B")
print("common days", len(common), common[0].date(), common[-1].date())
print("corr", repr(np.corrcoef(r[common], rets_b[common])[0, 1]))
union = eq_a.index.union(eq_b.index)
print("union days", len(union), union[0].date(), union[-1].date())
print("b pct at its first day", repr(eq_b.iloc[0] / eq_b.iloc[0] * 100), "last", repr(eq_b.iloc[-1] / eq_b.iloc[0] * 100))
print("a pct at last", repr(eq_a.iloc[-1] / eq_a.iloc[0] * 100))
