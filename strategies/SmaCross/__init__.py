"""Trend following: long when the fast SMA is above the slow one, short when below."""
from jesse.strategies import Strategy
import jesse.indicators as ta
from jesse import utils


class SmaCross(Strategy):
    def hyperparameters(self):
        return [
            {'name': 'fast', 'type': int, 'min': 5, 'max': 50, 'step': 1, 'default': 20},
            {'name': 'slow', 'type': int, 'min': 20, 'max': 200, 'step': 5, 'default': 50},
            {'name': 'risk', 'type': float, 'min': 0.1, 'max': 1.0, 'step': 0.1, 'default': 0.5},
        ]

    @property
    def fast_sma(self):
        return ta.sma(self.candles, self.hp['fast'])

    @property
    def slow_sma(self):
        return ta.sma(self.candles, self.hp['slow'])

    def should_long(self) -> bool:
        return self.fast_sma > self.slow_sma

    def should_short(self) -> bool:
        return self.fast_sma < self.slow_sma

    def go_long(self):
        qty = utils.size_to_qty(self.balance * self.hp['risk'], self.price, fee_rate=self.fee_rate)
        self.buy = qty, self.price

    def go_short(self):
        qty = utils.size_to_qty(self.balance * self.hp['risk'], self.price, fee_rate=self.fee_rate)
        self.sell = qty, self.price

    def update_position(self):
        if self.is_long and self.fast_sma < self.slow_sma:
            self.liquidate()
        elif self.is_short and self.fast_sma > self.slow_sma:
            self.liquidate()

    def should_cancel_entry(self) -> bool:
        return True
