"""Pairs trading: two routes of this strategy, one per leg, trade the spread of leg A against leg B.

Route 0 trades leg A and decides; route 1 trades leg B and follows, on the same bar (Jesse runs the routes
in order, after every route's candles of the bar are in). Each bar route 0 takes the last `lookback` closes
of both symbols (`get_candles`, warm-up included), estimates the hedge ratio beta of A on B (`hedge_method`:
`ols` with an intercept over the window, `kalman` the last Kalman-filtered beta of the window (`kalman_hedge`:
an OLS prior from the window's first quarter, at least 10 bars, then filtered bar by bar), or `fixed` =
`hedge_ratio`, e.g. a screen's OLS ratio), forms the spread A - beta * B over the window and its z-score
(last spread minus the window's mean, over its population standard deviation).

Flat: short the spread (short A, long B when beta > 0) when z > entry_z; long it when z < -entry_z.
In a position: leave when z is back inside exit_z (z <= exit_z after a short, z >= -exit_z after a long).
Sizes: A's quantity is risk * balance / (price_A + |beta| * price_B) and B's is |beta| times A's (units of B
per unit of A: the hedge ratio), so the legs' quantities stand in the hedge ratio's proportion.

Route 0 shares its decision with route 1 through Jesse's shared_vars. With anything other than two routes
on one timeframe (e.g. a single-route backtest) it never trades.
"""
import numpy as np
from jesse.strategies import Strategy

KEY = 'pairs_trading'
KALMAN_DELTA = 1e-4


def kalman_hedge(a, b, delta=KALMAN_DELTA):
    """Kalman-filtered hedge ratio of a on b: a_t = alpha_t + beta_t * b_t + e_t, e_t ~ N(0, Ve), the state
    x_t = (alpha_t, beta_t) a random walk x_t = x_(t-1) + w_t, w_t ~ N(0, Q). docs/PAIRS.md has the equations.

    Warm-up: the first W = max(10, n // 4) bars. Their OLS fit of a on [1, b] gives the prior x = (alpha, beta),
    Ve = its residual variance (ddof 2) and P = Ve (X'X)^-1 (the OLS covariance); Q = delta / (1 - delta) * W * P
    (one bar's worth of the warm-up's information: the filter does not depend on the prices' units). Each bar
    t = W .. n-1: P = P + Q; F = [1, b_t]; S = F P F' + Ve; K = P F' / S; x = x + K (a_t - F x); P = P - K F P.
    It runs on b standardized by the warm-up's mean and std (an exact change of coordinates, there X'X = W I) so
    raw price levels lose no precision. Answers the filtered alpha and beta of bars W .. n-1 with the parameters,
    or None with fewer than 11 bars, a constant b or an exact fit in the warm-up.
    The same function is in strategies/PairsTrading/__init__.py and worker/python/jesse_mcp_runner.py.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = len(a)
    w = max(10, n // 4)
    if n <= w:
        return None
    mean, std = float(b[:w].mean()), float(b[:w].std())
    if not std > 0:
        return None
    z = (b - mean) / std
    x = np.array([a[:w].mean(), (a[:w] - a[:w].mean()) @ z[:w] / w])
    residuals = a[:w] - x[0] - x[1] * z[:w]
    ve = float(residuals @ residuals) / (w - 2)
    if not ve > 0:
        return None
    p = ve / w * np.eye(2)
    q = delta / (1.0 - delta) * ve * np.eye(2)
    to_raw = np.array([[1.0, -mean / std], [0.0, 1.0 / std]])
    prior_state, prior_cov = to_raw @ x, to_raw @ p @ to_raw.T
    alphas, betas = np.empty(n - w), np.empty(n - w)
    for t in range(w, n):
        f = np.array([1.0, z[t]])
        p = p + q
        s = f @ p @ f + ve
        k = p @ f / s
        x = x + k * (a[t] - f @ x)
        p = p - np.outer(k, f @ p)
        alphas[t - w], betas[t - w] = x[0] - x[1] * mean / std, x[1] / std
    return {"delta": delta, "warmup_bars": w, "observation_variance": ve, "prior_state": prior_state,
            "prior_cov": prior_cov, "state_cov": to_raw @ q @ to_raw.T, "alpha": alphas, "beta": betas}


class PairsTrading(Strategy):
    def hyperparameters(self):
        return [
            {'name': 'entry_z', 'type': float, 'min': 0.5, 'max': 4.0, 'step': 0.25, 'default': 2.0},
            {'name': 'exit_z', 'type': float, 'min': 0.0, 'max': 2.0, 'step': 0.25, 'default': 0.5},
            {'name': 'lookback', 'type': int, 'min': 20, 'max': 1000, 'step': 10, 'default': 100},
            {'name': 'hedge_method', 'type': 'categorical', 'options': ['ols', 'kalman', 'fixed'], 'default': 'ols'},
            {'name': 'hedge_ratio', 'type': float, 'min': -100.0, 'max': 100.0, 'step': 0.01, 'default': 1.0},
            {'name': 'risk', 'type': float, 'min': 0.1, 'max': 0.9, 'step': 0.1, 'default': 0.5},
        ]

    def _paired(self) -> bool:
        routes = self.routes
        return len(routes) == 2 and routes[0].timeframe == routes[1].timeframe and self.current_route_index in (0, 1)

    def _state(self) -> dict:
        return self.shared_vars.setdefault(KEY, {'target': 0, 'time': None, 'b_side': 0})

    def _now(self):
        return self.current_candle[0]

    def _signal(self):
        """(z-score, beta) of this bar, or None before `lookback` bars exist or on a flat spread."""
        n = int(self.hp['lookback'])
        a = self.get_candles(self.exchange, self.routes[0].symbol, self.timeframe)[:, 2]
        b = self.get_candles(self.exchange, self.routes[1].symbol, self.timeframe)[:, 2]
        if len(a) < n or len(b) < n:
            return None
        a, b = a[-n:], b[-n:]
        method = self.hp['hedge_method']
        if method == 'fixed':
            beta = float(self.hp['hedge_ratio'])
        elif method == 'kalman':
            filtered = kalman_hedge(a, b)
            beta = float(filtered['beta'][-1]) if filtered is not None else float('nan')
        else:
            beta = float(np.polyfit(b, a, 1)[0])
        spread = a - beta * b
        sd = float(spread.std())
        if not np.isfinite(beta) or not sd > 0:
            return None
        return (float(spread[-1]) - float(spread.mean())) / sd, beta

    def before(self):
        if not self._paired() or self.current_route_index != 0:
            return
        state = self._state()
        current = 1 if self.is_long else -1 if self.is_short else 0
        signal = self._signal()
        target = current
        if signal is not None:
            z, beta = signal
            if current == 0 and z > self.hp['entry_z']:
                target = -1
            elif current == 0 and z < -self.hp['entry_z']:
                target = 1
            elif current == 1 and z >= -self.hp['exit_z']:
                target = 0
            elif current == -1 and z <= self.hp['exit_z']:
                target = 0
        if target != 0 and current == 0:
            z, beta = signal
            price_a, price_b = self.price, self.get_candles(self.exchange, self.routes[1].symbol, self.timeframe)[-1, 2]
            qty_a = self.balance * self.hp['risk'] / (price_a + abs(beta) * price_b)
            state.update({'target': target, 'time': self._now(), 'beta': beta, 'z': z, 'qty_a': qty_a,
                          'qty_b': abs(beta) * qty_a, 'b_side': -target * int(np.sign(beta))})
        elif target == 0:
            state.update({'target': 0, 'time': self._now(), 'b_side': 0})

    def _wanted(self) -> int:
        """This leg's side in the current decision: 1 long, -1 short, 0 flat."""
        state = self._state()
        if self.current_route_index == 0:
            return state['target']
        return state['b_side'] if state['target'] != 0 else 0

    def _entering(self, side: int) -> bool:
        return self._paired() and self._wanted() == side and self._state()['time'] == self._now()

    def should_long(self) -> bool:
        return self._entering(1)

    def should_short(self) -> bool:
        return self._entering(-1)

    def _qty(self) -> float:
        state = self._state()
        return state['qty_a'] if self.current_route_index == 0 else state['qty_b']

    def go_long(self):
        self.buy = self._qty(), self.price

    def go_short(self):
        self.sell = self._qty(), self.price

    def update_position(self):
        side = 1 if self.is_long else -1
        if self._wanted() != side:
            self.liquidate()

    def should_cancel_entry(self) -> bool:
        return True
