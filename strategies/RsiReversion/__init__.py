"""Mean reversion: buy an oversold RSI with an ATR stop, take profit when RSI recovers."""
from jesse.strategies import Strategy
import jesse.indicators as ta
from jesse import utils


class RsiReversion(Strategy):
    def hyperparameters(self):
        return [
            {'name': 'rsi_period', 'type': int, 'min': 5, 'max': 30, 'step': 1, 'default': 14},
            {'name': 'oversold', 'type': int, 'min': 10, 'max': 40, 'step': 5, 'default': 30},
            {'name': 'exit_level', 'type': int, 'min': 50, 'max': 80, 'step': 5, 'default': 55},
            {'name': 'stop_atr', 'type': float, 'min': 1.0, 'max': 5.0, 'step': 0.5, 'default': 2.0},
        ]

    @property
    def rsi(self):
        return ta.rsi(self.candles, self.hp['rsi_period'])

    def should_long(self) -> bool:
        return self.rsi < self.hp['oversold']

    def go_long(self):
        stop = self.price - ta.atr(self.candles) * self.hp['stop_atr']
        qty = utils.risk_to_qty(self.balance, 2, self.price, stop, fee_rate=self.fee_rate)
        qty = min(qty, utils.size_to_qty(self.balance * 0.9, self.price, fee_rate=self.fee_rate))
        self.buy = qty, self.price
        self.stop_loss = qty, stop

    def update_position(self):
        if self.is_long and self.rsi > self.hp['exit_level']:
            self.liquidate()

    def should_cancel_entry(self) -> bool:
        return True
