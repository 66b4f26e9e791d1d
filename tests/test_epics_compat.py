"""The caproto internals the bridge relies on (``mtango/epics/compat.py``) are all still there.

When caproto is upgraded and one of them is renamed or removed, these tests say which, before
anything subtler breaks (a monitor that never starts, a context whose dead thread goes unseen).
"""

from __future__ import annotations

import re
from pathlib import Path

import caproto

from mtango.epics import compat
from tests.bridge import poll

ROOT = Path(__file__).resolve().parents[1]


def test_the_tested_caproto_release_is_installed_and_pinned() -> None:
    assert caproto.__version__ == compat.TESTED_VERSION, (
        f"caproto {caproto.__version__} is installed, but mtango/epics/compat.py was checked "
        f"against {compat.TESTED_VERSION}: run tests/test_epics_compat.py and the EPICS tests, "
        "then update TESTED_VERSION and the pin in pyproject.toml")
    pins = re.findall(r'"caproto([<>=!~][^"]*)"', (ROOT / "pyproject.toml").read_text())
    assert pins == [f"=={compat.TESTED_VERSION}"], pins


def test_module_and_class_names_exist() -> None:
    missing = compat.missing_names()
    assert not missing, f"caproto {caproto.__version__} lacks names compat.py uses: {missing}"


def test_instance_names_exist_on_a_live_context(caproto_ioc) -> None:
    """A context made as the bridge makes it, a connected PV and a monitor of it."""
    host, port = caproto_ioc.address.split(":")
    context = compat.new_context([(host, int(port))], timeout=2.0, search_retry=0.03)
    try:
        (pv,) = context.get_pvs(caproto_ioc.pv("double"))
        pv.wait_for_connection(timeout=5)
        updates: list = []

        def on_update(_sub, response) -> None:  # caproto holds callbacks weakly: keep a name
            updates.append(response)

        sub = pv.subscribe(data_type="time")
        compat.add_subscription_callback(sub, on_update)
        poll("a monitor update", lambda: updates)
        missing = compat.missing_instance_names(context, pv, sub)
        assert not missing, f"caproto {caproto.__version__} objects lack: {missing}"
        assert not compat.subscription_pending(sub)
        facts = compat.connection_facts(pv)
        assert facts is not None and facts[3] == caproto_ioc.address
        assert compat.circuit_counts(context) == (1, 1)
        assert all(t is not None and t.is_alive() for t in compat.context_threads(context))
    finally:
        context.disconnect()


def test_an_ioc_error_message_answers_the_put_it_quotes(caproto_ioc) -> None:
    """caproto's IOC refuses a put beyond a PV's control limits with a CA ERROR message; the
    context the bridge makes hands it to the put's callback (caproto alone would drop it and
    leave the put unanswered: ``compat._answer_error_responses``)."""
    import caproto as ca
    from caproto.threading.client import Batch

    host, port = caproto_ioc.address.split(":")
    context = compat.new_context([(host, int(port))], timeout=2.0, search_retry=0.03)
    try:
        (pv,) = context.get_pvs(caproto_ioc.pv("w:double"))
        pv.wait_for_connection(timeout=5)
        answers: list = []

        def answered(response) -> None:
            answers.append(response)

        with Batch(timeout=30) as batch:
            batch.write(pv, [1000.0], callback=answered)
        # A round trip to the IOC's process: 1 s was short on a loaded machine, and an unanswered
        # put fails all the same (it would never be answered).
        poll("the refusal", lambda: answers, timeout=30)
        (answer,) = answers
        assert isinstance(answer, ca.ErrorResponse)
        assert answer.status.name == "ECA_PUTFAIL" and not answer.status.success
        assert not pv.circuit_manager.ioids  # the request is forgotten, as an answered one is
    finally:
        context.disconnect()
