"""The pure schedule and the watch settings: what is due when, parsed how."""

from __future__ import annotations

import signal

import pytest

from initfetch.errors import Loc
from initfetch.manifest.watch import OnChange, WatchConfig, parse, parse_duration, signal_number
from initfetch.watch import schedule as sched


def fixed(value: float = 0.5) -> sched.Schedule:
    return sched.Schedule(rng=lambda: value)  # 0.5: no jitter either way


def test_static_poll_is_due_after_its_interval_with_jitter() -> None:
    s = fixed()
    s.poll("a", 60, now=100)
    assert s.due(159.9) == [] and [e.key for e in s.due(160)] == ["a"]
    low, high = sched.Schedule(rng=lambda: 0.0), sched.Schedule(rng=lambda: 0.999)
    assert low.poll("a", 100, 0).at == pytest.approx(90)
    assert high.poll("a", 100, 0).at == pytest.approx(110, abs=0.1)


def test_renewable_lease_renews_at_two_thirds_then_replaces_at_max_ttl() -> None:
    s = fixed(0.0)
    e = s.lease("db", 60, renewable=True, now=0)
    assert (e.action, e.at, e.expires_at) == (sched.RENEW, pytest.approx(40), 60)
    e = s.renewed("db", 60, now=40)  # full duration granted: renew again
    assert (e.action, e.at) == (sched.RENEW, pytest.approx(80))
    e = s.renewed("db", 20, now=80)  # capped by max TTL: replace ahead of expiry
    assert e.action == sched.REPLACE and e.at < e.expires_at == 100


def test_non_renewable_lease_is_replaced_before_expiry() -> None:
    e = fixed(0.0).lease("pki", 30, renewable=False, now=0)
    assert e.action == sched.REPLACE and e.at == pytest.approx(20)


def test_certificate_is_replaced_at_two_thirds_of_its_validity_from_notbefore_with_jitter() -> None:
    # Issued 30 s ago (notBefore backdated), 90 s validity, 60 s left: due at notBefore + 60.
    e = fixed(0.0).lease("cert", 60, renewable=False, now=1000, validity=90)
    assert e.action == sched.REPLACE and e.at == pytest.approx(1030) and e.expires_at == 1060
    # Jitter: up to 5% of the validity earlier, never later than two thirds.
    early = sched.Schedule(rng=lambda: 0.999).lease("cert", 60, False, now=1000, validity=90)
    assert 1030 - 0.05 * 90 <= early.at < 1030
    # Read late (past two thirds already): due now, not in the past.
    late = fixed(0.0).lease("cert", 10, renewable=False, now=1000, validity=90)
    assert late.at == 1000


def test_refused_renewal_is_replaced_now() -> None:
    s = fixed()
    s.lease("db", 60, renewable=True, now=0)
    assert s.refused("db", now=40).at == 40 and s.entries["db"].action == sched.REPLACE


def test_failures_back_off_and_count_as_stale_until_success() -> None:
    s = fixed()
    s.poll("a", 300, now=0)
    delays = []
    for i in range(12):
        now = 300.0 + i
        delays.append(s.failed("a", now).at - now)
    assert delays[0] == pytest.approx(sched.BACKOFF_FIRST)
    assert delays == sorted(delays) and max(delays) == pytest.approx(sched.BACKOFF_MAX)
    assert s.stale_since() == 0  # when it last succeeded
    s.poll("a", 300, now=400)
    assert s.stale_since() is None


def test_backoff_never_exceeds_the_poll_interval() -> None:
    s = fixed()
    s.poll("a", 5, now=0)
    for _ in range(10):
        e = s.failed("a", now=10)
    assert e.at - 10 <= 5


def test_expired_leases_are_reported() -> None:
    s = fixed()
    s.lease("db", 10, renewable=True, now=0)
    assert s.expired(9) == [] and [e.key for e in s.expired(10)] == ["db"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("500ms", 0.5), (45, 45)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "-1s", "0", True, None, "1h 5m", "999d"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_signal_names() -> None:
    assert signal_number("HUP") == signal_number("sighup") == signal.SIGHUP
    with pytest.raises(ValueError, match="unknown signal"):
        signal_number("NOPE")


class Chk:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, where: Loc, message: str) -> None:
        self.problems.append(message)


def test_parse_refresh_and_on_change() -> None:
    chk = Chk()
    data = {
        "providers": {"vault": {"type": "vault", "refresh": "1m"}},
        "secrets": {"a": {"ref": "vault://s/a#k", "refresh": "10s"}, "b": "vault://s/b#k"},
        "on_change": {"restart": True, "grace": "3s", "revoke_grace": "1m"},
    }
    config = parse(chk, data)
    assert chk.problems == []
    assert config.refresh_for("a", "vault", "vault") == 10
    assert config.refresh_for("b", "vault", "vault") == 60
    assert config.refresh_for("c", "awssm", "aws-secretsmanager") == 300
    assert config.refresh_for("d", "env", "env") is None
    assert config.on_change == OnChange(restart=True, grace=3, revoke_grace=60)
    assert WatchConfig().on_change.signal is None


def test_parse_reports_every_problem_in_one_line_each() -> None:
    chk = Chk()
    parse(
        chk,
        {
            "secrets": {"a": {"ref": "x", "refresh": "soon"}},
            "on_change": {"signal": "NOPE", "restart": "yes", "command": "reload", "bogus": 1},
        },
    )
    text = "\n".join(chk.problems)
    assert len(chk.problems) == 5, text
    assert "refresh must be a duration" in text and "unknown signal" in text
    assert "command must be a non-empty list" in text and "unknown key 'bogus'" in text


def test_keeper_retires_a_certificate_only_when_asked_and_keeps_it_across_a_new_login() -> None:
    import threading

    from initfetch.providers.base import FetchContext, Lease, Provider
    from initfetch.reference import DocKey
    from initfetch.resolve.pool import WorkerPool
    from initfetch.watch.keeper import Calls, Doc, LeaseKeeper

    class Recording(Provider):
        type_name = "recording"

        def __init__(self) -> None:
            super().__init__("p", {}, {})
            self.revoked: list[str] = []

        def revoke(self, lease_id: str, ctx: FetchContext) -> None:
            self.revoked.append(lease_id)

    inst = Recording()
    keeper = LeaseKeeper(Calls({"p": inst}, WorkerPool(2), 5.0, threading.Event()), fixed(), lambda: 0.0)
    db, cert = Doc("p", DocKey("db/creds/app")), Doc("p", DocKey("pki/issue/web"))
    db_lease = Lease("db/creds/app/1", 60, True)
    cert_lease = Lease("pki/cert/01", 60, False, validity=90, retire=False, outlives_login=True)
    keeper.keep(db, db_lease, 0.0)
    keeper.keep(cert, cert_lease, 0.0)
    # issued 30 s ago (60 s left of 90): due at notBefore + about two thirds of 90
    assert keeper.schedule.entries[cert].at == pytest.approx(-30 + 90 * (2 / 3 - 0.05 * 0.5))
    assert keeper.leased("p") == {db}  # a new login takes the database lease, not the certificate
    keeper.retire([(db, db_lease), (cert, cert_lease)], at=0.0)
    keeper.revoke_due(1.0)
    assert inst.revoked == ["db/creds/app/1"]  # the certificate is left to expire
    keeper.finish(revoke=True)  # --revoke-on-exit: everything, the certificate too
    assert set(inst.revoked[1:]) == {"db/creds/app/1", "pki/cert/01"}
