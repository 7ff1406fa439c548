"""``stream_app.transactions`` without a broker: what it changes in aiokafka's producer."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka.errors import ConcurrentTransactions
from aiokafka.producer.sender import AddPartitionsToTxnHandler

from stream_app.transactions import CONCURRENT_TXN_RETRY_S


def _handler(partitions_in_txn: set) -> AddPartitionsToTxnHandler:
    txn_manager = SimpleNamespace(txn_partitions=partitions_in_txn, transactional_id="t")
    sender = SimpleNamespace(_retry_backoff=0.1, _txn_manager=txn_manager)
    return AddPartitionsToTxnHandler(sender, [])


def _concurrent(topic: str = "out", partition: int = 0) -> SimpleNamespace:
    return SimpleNamespace(errors=[(topic, [(partition, ConcurrentTransactions.errno)])])


def test_a_transaction_right_after_the_last_retries_adding_partitions_soon() -> None:
    """The broker answers CONCURRENT_TRANSACTIONS until the last commit's markers are written;
    aiokafka's own retry after that is 20 ms, paid by every back-to-back transaction."""
    assert CONCURRENT_TXN_RETRY_S < 0.02
    assert _handler(set()).handle_response(_concurrent()) == CONCURRENT_TXN_RETRY_S


def test_other_retries_keep_the_producer_backoff() -> None:
    assert _handler({"a partition added already"}).handle_response(_concurrent()) == 0.1
