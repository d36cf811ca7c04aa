"""Loyalty points under concurrency, and earning on a large batch, on PostgreSQL.

Throughput: 8 worker processes (not threads: one process would measure the GIL), each
with its own app and connections, move points on (a) one hot account and (b) 1,000
accounts shared by the workers. The Rapport side goes through the service layer with
validation, idempotency keys, FIFO lot consumption, the audit entry and the
``loyalty.points.*`` event, and every enabled plugin's hooks: ``redeem_points`` for
redemptions and core's ``record_interaction`` of a purchase (the loyalty hook earns on it)
for earnings. The baseline is the fastest honest hand-written path, run by the same 8
processes: SQLAlchemy Core, one connection per worker, a conditional ``UPDATE ... SET
balance = balance - x WHERE balance >= x`` per redemption and ``balance = balance + x`` per
earning, each committed. A and B are interleaved: each workload runs ROUNDS rounds of
baseline then Rapport (every other round Rapport first), each on fresh accounts; a side's
figure is its operations over its seconds across the rounds. Two workloads: redemptions
only, and a mix of 3 redemptions to 1 earning. Demand exceeds the balance on purpose (the
hot account runs dry): an overdraft is a final balance below zero or more points redeemed
than credited, and must be 0; the Rapport side also checks balance == sum of entries.

Batch: 100,000 purchases of 1,000 customers are written with a bulk INSERT (not timed),
then the loyalty hook's set-based earning runs on their ids in one transaction (timed,
commit included), with a capped rule and a tier multiplier in force.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import random
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, text

from bench import common

NAME = "loyalty"
WORKERS = 8
ACCOUNTS = 1000
OPS_PER_WORKER = int(os.environ.get("RAPPORT_BENCH_LOYALTY_OPS", "400"))
ROUNDS = int(os.environ.get("RAPPORT_BENCH_LOYALTY_ROUNDS", "3"))
REDEEM_POINTS = 3
EARN_AMOUNT = "4"        # 4 points at one point per USD
LOTS_PER_ACCOUNT = 20
BATCH = 100_000
RATIO_GOAL = 0.5


@dataclass
class Run:
    ops: int
    seconds: float
    redeemed: int
    refused: int
    credited: int
    cpu: float = 0.0     # CPU seconds of the worker processes (PostgreSQL's not included)

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds

    def __add__(self, other: Run) -> Run:
        return Run(self.ops + other.ops, self.seconds + other.seconds,
                   self.redeemed + other.redeemed, self.refused + other.refused,
                   self.credited + other.credited, self.cpu + other.cpu)


def _plan(worker: int, accounts: list[int], mixed: bool, ops: int) -> list[tuple[str, int]]:
    rng = random.Random(worker)
    return [("earn" if mixed and n % 4 == 3 else "redeem", rng.choice(accounts))
            for n in range(ops)]


def _rapport_ops(plan: list[tuple[str, int]], tag: str) -> tuple[int, int, int]:
    from core.errors import UserError
    from core.services.interactions import record_interaction
    from plugins.loyalty import service

    redeemed = refused = credited = 0
    for n, (op, customer_id) in enumerate(plan):
        if op == "earn":
            record_interaction({"customer_id": customer_id, "kind": "purchase",
                                "amount": EARN_AMOUNT, "currency": "USD",
                                "occurred_at": dt.datetime.now(dt.timezone.utc)})
            credited += int(EARN_AMOUNT)
            continue
        try:
            service.redeem_points({"customer_id": customer_id, "points": REDEEM_POINTS,
                                   "idempotency_key": f"{tag}-{n}"})
            redeemed += REDEEM_POINTS
        except UserError:
            refused += 1
    return redeemed, refused, credited


_REDEEM = text("UPDATE loyalty_account SET balance = balance - :x "
               "WHERE customer_id = :c AND balance >= :x")
_EARN = text("UPDATE loyalty_account SET balance = balance + :x WHERE customer_id = :c")


def _baseline_ops(conn: Any, plan: list[tuple[str, int]]) -> tuple[int, int, int]:
    redeemed = refused = credited = 0
    for op, customer_id in plan:
        with conn.begin():
            if op == "earn":
                conn.execute(_EARN, {"x": int(EARN_AMOUNT), "c": customer_id})
                credited += int(EARN_AMOUNT)
                continue
            if conn.execute(_REDEEM, {"x": REDEEM_POINTS, "c": customer_id}).rowcount:
                redeemed += REDEEM_POINTS
            else:
                refused += 1
    return redeemed, refused, credited


def _worker(worker: int, url: str, tasks: Any, results: Any, barrier: Any) -> None:
    """One worker process: its own app (the Rapport side) and its own connection (the
    baseline's); runs the tasks it is sent, each started with the others by ``barrier``."""
    from core import create_app

    app = create_app({"RAPPORT_ENV": "test", "RAPPORT_DATABASE_URL": url,
                      "RAPPORT_PLUGINS": ["loyalty"]})
    engine = common.engine_of(app)
    with app.app_context(), engine.connect() as conn:
        while (task := tasks.get()) is not None:
            side, accounts, mixed, ops, tag = task
            plan = _plan(worker, accounts, mixed, ops)
            barrier.wait()
            cpu = time.process_time()
            if side == "rapport":
                counts = _rapport_ops(plan, f"{tag}-{worker}")
            else:
                counts = _baseline_ops(conn, plan)
            results.put((*counts, time.monotonic(), time.process_time() - cpu))
    common.dispose(app)


class Pool:
    """WORKERS processes (spawned: nothing inherited from the parent's connections)."""

    def __init__(self, url: str):
        context = multiprocessing.get_context("spawn")
        self.barrier = context.Barrier(WORKERS + 1)
        self.results = context.Queue()
        self.tasks = [context.Queue() for _ in range(WORKERS)]
        self.processes = [context.Process(target=_worker, args=(
            n, url, self.tasks[n], self.results, self.barrier)) for n in range(WORKERS)]
        for process in self.processes:
            process.start()

    def run(self, side: str, accounts: list[int], mixed: bool, ops: int, tag: str) -> Run:
        for queue in self.tasks:
            queue.put((side, accounts, mixed, ops, tag))
        self.barrier.wait()
        began = time.monotonic()
        totals = [self.results.get() for _ in range(WORKERS)]
        seconds = max(t[3] for t in totals) - began
        redeemed, refused, credited = (sum(t[i] for t in totals) for i in range(3))
        return Run(WORKERS * ops, seconds, redeemed, refused, credited,
                   sum(t[4] for t in totals))

    def close(self) -> None:
        if not self.processes:
            return
        for queue in self.tasks:
            queue.put(None)
        for process in self.processes:
            process.join(60)
        self.processes = []


def seed(app: Any, customers: int, balance_each: int) -> list[int]:
    """Members with ``balance_each`` points in LOTS_PER_ACCOUNT lots (a multiple of it);
    the programme (earn rule with a cap, a tier with a multiplier) on first use."""
    from core.db import db
    from core.models import Customer
    from plugins.loyalty import programme
    from plugins.loyalty.models import Account, EntryKind, LedgerEntry

    now = dt.datetime.now(dt.timezone.utc)
    with app.app_context():
        if not programme.earn_rules():
            programme.create_earn_rule({"name": "1 point per USD", "currency": "USD",
                                        "points_per_unit": "1", "cap_points": 10_000,
                                        "cap_period": "day",
                                        "valid_from": (now - dt.timedelta(days=400)).isoformat()})
            programme.create_tier({"name": "Silver", "threshold_points": 1,
                                   "earn_multiplier": "1.5"})
        ids = list(db.session.scalars(insert(Customer).returning(Customer.id), [
            {"name": f"Member {n}", "attributes": {}, "status": "active",
             "lifecycle_stage": "customer", "created_at": now, "updated_at": now}
            for n in range(customers)]))
        db.session.execute(insert(Account), [
            {"customer_id": c, "balance": balance_each, "created_at": now, "updated_at": now}
            for c in ids])
        per_lot = balance_each // LOTS_PER_ACCOUNT
        if per_lot:
            db.session.execute(insert(LedgerEntry), [
                {"customer_id": c, "kind": EntryKind.ADJUST, "points": per_lot,
                 "remaining": per_lot, "reason": "bench",
                 "occurred_at": now - dt.timedelta(days=lot),
                 "expires_at": now + dt.timedelta(days=30 + lot), "recorded_at": now}
                for c in ids for lot in range(LOTS_PER_ACCOUNT)])
        db.session.commit()
    return ids


def overdrafts(app: Any, ids: list[int], start_balance: int, run: Run, ledger: bool) -> int:
    """Accounts below zero, plus 1 if more was redeemed than there was to redeem or if the
    balances do not add up. The Rapport side is judged by its ledger (credits include the
    tier multiplier), and every account's balance must equal the sum of its entries."""
    from core.db import db
    from plugins.loyalty.models import Account, EntryKind, LedgerEntry

    with app.app_context():
        balances = dict(db.session.execute(select(Account.customer_id, Account.balance)
                                           .where(Account.customer_id.in_(ids))).all())
        redeemed, credited = run.redeemed, run.credited
        if ledger:
            flows = dict(db.session.execute(
                select(LedgerEntry.kind, func.sum(LedgerEntry.points))
                .where(LedgerEntry.customer_id.in_(ids),
                       LedgerEntry.kind.in_([EntryKind.REDEEM, EntryKind.EARN]))
                .group_by(LedgerEntry.kind)).all())
            redeemed = -int(flows.get(EntryKind.REDEEM) or 0)
            credited = int(flows.get(EntryKind.EARN) or 0)
        available = start_balance * len(ids) + credited
        bad = sum(1 for b in balances.values() if b < 0)
        bad += int(redeemed > available) + int(sum(balances.values()) != available - redeemed)
        if ledger:
            sums = dict(db.session.execute(
                select(LedgerEntry.customer_id, func.sum(LedgerEntry.points))
                .where(LedgerEntry.customer_id.in_(ids)).group_by(LedgerEntry.customer_id)).all())
            bad += sum(1 for c, b in balances.items() if sums.get(c, 0) != b)
    return bad


def measure_concurrency(app: Any, pool: Pool) -> list[list[Any]]:
    """Each workload: a warm-up of both sides (not counted), then ROUNDS rounds of
    baseline and Rapport, alternating which goes first, each on fresh accounts."""
    rows = []
    demand = WORKERS * OPS_PER_WORKER * REDEEM_POINTS
    hot_balance = int(demand * 0.8) // LOTS_PER_ACCOUNT * LOTS_PER_ACCOUNT
    warm = seed(app, ACCOUNTS, 1000)
    for side in ("baseline", "rapport"):
        pool.run(side, warm, True, 50, "warm")
    for label, count, balance in (("1 hot account", 1, hot_balance),
                                  (f"{ACCOUNTS} accounts", ACCOUNTS, 40)):
        for mixed in (False, True):
            totals: dict[str, Run] = {}
            bad = {"baseline": 0, "rapport": 0}
            for round_ in range(ROUNDS):
                order = ("baseline", "rapport") if round_ % 2 == 0 else ("rapport", "baseline")
                for side in order:
                    ids = seed(app, count, balance)
                    run = pool.run(side, ids, mixed, OPS_PER_WORKER,
                                   f"{count}-{int(mixed)}-{round_}")
                    bad[side] += overdrafts(app, ids, balance, run, ledger=side == "rapport")
                    totals[side] = totals[side] + run if side in totals else run
            ours, base = totals["rapport"], totals["baseline"]
            ratio = ours.per_second / base.per_second
            rows.append([label, "3 redeem : 1 earn" if mixed else "redeem only",
                         round(ours.per_second), round(base.per_second), round(ratio, 2),
                         "meets" if ratio >= RATIO_GOAL else "MISSES",
                         round(ours.cpu / ours.ops * 1000, 3), round(base.cpu / base.ops * 1000, 3),
                         f"{ours.refused}/{base.refused}", bad["rapport"], bad["baseline"]])
    return rows


def measure_batch(app: Any) -> list[Any]:
    from core.db import db
    from core.models import Interaction
    from plugins.loyalty import earning
    from plugins.loyalty.config import loyalty_settings

    customers = seed(app, ACCOUNTS, 0)
    now = dt.datetime.now(dt.timezone.utc)
    rng = random.Random(5)
    with app.app_context():
        ids = list(db.session.scalars(insert(Interaction).returning(
            Interaction.id, sort_by_parameter_order=True), [
            {"customer_id": rng.choice(customers), "kind": "purchase",
             "amount": f"{rng.randint(5, 300)}.{rng.randint(0, 99):02d}", "currency": "USD",
             "occurred_at": now - dt.timedelta(minutes=rng.randint(1, 500_000)),
             "payload": {}} for _ in range(BATCH)]))
        db.session.commit()
        common.analyze(db.engine)
        with common.count_statements(db.engine) as statements:
            began = time.perf_counter()
            earning.earn_and_reverse(ids, now, loyalty_settings())
            db.session.commit()
            seconds = time.perf_counter() - began
        entries = db.session.scalar(text(
            "SELECT count(*) FROM loyalty_ledger WHERE kind = 'earn' AND interaction_id >= "
            ":first"), {"first": min(ids)})
    return [f"{BATCH:,}", entries, round(seconds, 2), round(BATCH / seconds), len(statements)]


def main() -> None:
    print(__doc__.strip().splitlines()[0])
    print(f"PostgreSQL {common.postgres_version()}; {common.machine()}; {WORKERS} worker "
          f"processes x {OPS_PER_WORKER} operations per run, {ROUNDS} interleaved rounds per "
          f"side; redemptions of {REDEEM_POINTS} points, earnings of {EARN_AMOUNT} USD; demand "
          f"exceeds the hot account's balance; load average {os.getloadavg()}.\n")
    with common.fresh_database(NAME) as url:
        app = common.make_app(url, plugins=["loyalty"])
        pool = Pool(url)
        try:
            rows = measure_concurrency(app, pool)
            pool.close()
            batch = measure_batch(app)
        finally:
            pool.close()
            common.dispose(app)
    common.print_table(
        ["accounts", "workload", "rapport ops/s", "baseline ops/s", "ratio",
         f">= {RATIO_GOAL}", "client CPU ms/op (rapport)", "client CPU ms/op (baseline)",
         "refused (rapport/baseline)", "overdrafts", "baseline overdrafts"],
        rows, title="Concurrent points moves")
    print(f"load average after: {os.getloadavg()}")
    common.print_table(["interactions", "earn entries", "seconds", "interactions/s",
                        "SQL statements (COPY aside)"], [batch], title="Earning on one batch")


if __name__ == "__main__":
    main()
