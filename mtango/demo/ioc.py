"""Demo and test IOCs on loopback: a caproto IOC and, for tests, a softioc one.

``python -m mtango.demo.ioc --port 5070`` serves the demo PVs (prefix ``demo:``) with caproto:
every DBR type (double, float, long, short, char, enum, string, arrays), a string record whose
``.VAL$`` is a long string, a PV in MAJOR alarm, a NaN, a counter that changes every second, and
``fast`` and ``fast_waveform`` (10,000 doubles) that change 10 times a second.
``--flavor softioc`` serves real EPICS base records (ai, ao, longin, waveform of several element
types, mbbi, stringin) through pythonSoftIOC, which the tests use next to the caproto IOC.
``--bulk N`` adds N double PVs ``<prefix>bulk:0000``... for batch reads and benchmarks, and
``--changing N`` (caproto) N doubles ``<prefix>changing:0000``... that change 10 times a second.

Writable PVs (``<prefix>w:...``) are for the write tests; nothing else reads them, so the
other PVs keep their initial values whatever the tests write. On the caproto IOC:

- ``w:double`` (control limits -100..100: the IOC refuses a value beyond them with a CA error),
  ``w:float``, ``w:long``, ``w:short``, ``w:char``: scalars of each numeric DBR type;
- ``w:enum`` (labels Off, On, Fault), ``w:string`` (a stringout-like record: ``w:string.VAL$``
  writes it as a long string of up to 128 bytes), ``w:string_array`` (3 strings);
- ``w:waveform`` (up to 10 doubles), ``w:short_waveform`` (up to 5 shorts), ``w:char_waveform``
  (up to 64 chars, a native long string);
- ``w:readonly``: refuses writes (its access rights say READ only);
- ``w:busy`` (a put completes after 0.3 s) and ``w:stuck`` (after 5 s): puts with completion.

On the softioc IOC (EPICS base records): ``w:ao`` (DRVL -100, DRVH 100), ``w:longout``,
``w:mbbo`` (Zero, One, Two), ``w:stringout`` (``w:stringout.VAL$`` is a 40-byte long string),
``w:waveform`` (10 doubles), ``w:wf_short`` (5 shorts), ``w:long_string`` (a 64-byte char
waveform), ``w:busy`` (an ao whose put completes after 0.3 s), and ``w:readonly``, an ao in an
access security group without write rule (``WRITE_ACF``).

``start_ioc`` runs one as a child process the way the Tango demo stack runs its servers: on
127.0.0.1 only, on its own port (CA servers sharing a UDP port do not both answer unicast
searches), with no outside ``EPICS_*`` setting, stopped by ``Ioc.stop`` or at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtango.demo.stack import LOOPBACK, ManagedProcess, clean_env, free_port, spawn, wait_until

READY_LINE = "IOC READY"
DEMO_PREFIX = "demo:"
ENUM_STRINGS = ("Off", "On", "Fault")
WAVEFORM_LENGTH = 100
BUSY_SECONDS = 0.3  # how long a put to w:busy takes to complete
STUCK_SECONDS = 5.0  # how long a put to w:stuck takes (longer than the tests' write timeout)
# Access security for the softioc flavor: everything writable but the READONLY group.
WRITE_ACF = """\
ASG(DEFAULT) {
    RULE(1, READ)
    RULE(1, WRITE)
}
ASG(READONLY) {
    RULE(1, READ)
}
"""


def server_env(port: int) -> dict[str, str]:
    """CA server settings for caproto (``EPICS_CA_*``) and EPICS base (``EPICS_CAS_*``): one port,
    loopback only, beacons to loopback."""
    return {
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CAS_SERVER_PORT": str(port),
        "EPICS_CAS_INTF_ADDR_LIST": LOOPBACK,
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_CAS_BEACON_ADDR_LIST": LOOPBACK,
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_ADDR_LIST": f"{LOOPBACK}:{port}",
    }


# -- the IOCs (run inside the child process) -------------------------------------------------------


FAST_HZ = 10  # how often the fast PVs change
FAST_WAVEFORM_LENGTH = 10000


def caproto_pvdb(prefix: str, bulk: int = 0, changing: int = 0) -> dict:
    """The demo PVs as caproto channel data."""
    from caproto import (
        AccessRights,
        AlarmSeverity,
        AlarmStatus,
        ChannelAlarm,
        ChannelByte,
        ChannelChar,
        ChannelDouble,
        ChannelEnum,
        ChannelFloat,
        ChannelInteger,
        ChannelShort,
        ChannelString,
        ChannelType,
    )
    from caproto.server import PVGroup, pvproperty

    class Records(PVGroup):
        """PVs that need record fields (``NAME.VAL$``)."""

        string = pvproperty(
            value="hello from the demo IOC",
            dtype=ChannelType.STRING,
            record="stringin",
            name="string",
            doc="a string; string.VAL$ reads it as a long string",
        )
        w_string = pvproperty(
            value="initial",
            dtype=ChannelType.STRING,
            record="stringout",
            name="w:string",
            long_string_max_length=128,
            doc="a writable string; w:string.VAL$ writes it as a long string",
        )
        w_busy = pvproperty(value=0.0, name="w:busy", doc="a put completes after BUSY_SECONDS")
        w_stuck = pvproperty(value=0.0, name="w:stuck", doc="a put completes after STUCK_SECONDS")

        @w_busy.putter  # type: ignore[no-redef]
        async def w_busy(self, instance, value):
            await asyncio.sleep(BUSY_SECONDS)
            return value

        @w_stuck.putter  # type: ignore[no-redef]
        async def w_stuck(self, instance, value):
            await asyncio.sleep(STUCK_SECONDS)
            return value

    class ReadOnlyDouble(ChannelDouble):
        """A PV whose access rights say READ only: CA clients must not write it."""

        def check_access(self, hostname, username):
            return AccessRights.READ

    limits = dict(
        units="mm",
        precision=3,
        lower_disp_limit=-10.0,
        upper_disp_limit=10.0,
        lower_alarm_limit=-9.0,
        upper_alarm_limit=9.0,
        lower_warning_limit=-5.0,
        upper_warning_limit=5.0,
        lower_ctrl_limit=-10.0,
        upper_ctrl_limit=10.0,
    )
    pvdb = {
        f"{prefix}double": ChannelDouble(value=1.234, **limits),
        f"{prefix}float": ChannelFloat(value=2.5, units="V", precision=2),
        f"{prefix}long": ChannelInteger(value=123456, units="counts"),
        f"{prefix}short": ChannelShort(value=-7),
        f"{prefix}char": ChannelByte(value=65),
        f"{prefix}enum": ChannelEnum(value="On", enum_strings=list(ENUM_STRINGS)),
        f"{prefix}waveform": ChannelDouble(
            value=[math.sin(i / 10) for i in range(WAVEFORM_LENGTH)],
            max_length=WAVEFORM_LENGTH,
            units="V",
            precision=4,
        ),
        f"{prefix}int_waveform": ChannelInteger(value=list(range(20)), max_length=20),
        f"{prefix}string_array": ChannelString(value=["one", "two", "three"], max_length=3),
        f"{prefix}nan": ChannelDouble(value=math.nan),
        f"{prefix}alarm": ChannelDouble(
            value=9.5,
            alarm=ChannelAlarm(status=AlarmStatus.HIHI, severity=AlarmSeverity.MAJOR_ALARM),
            **limits,
        ),
        f"{prefix}counter": ChannelInteger(value=0, units="s"),
        f"{prefix}fast": ChannelDouble(value=0.0, units="V", precision=3),
        f"{prefix}fast_waveform": ChannelDouble(
            value=[0.0] * FAST_WAVEFORM_LENGTH, max_length=FAST_WAVEFORM_LENGTH, units="V"),
    }
    pvdb.update(
        {
            f"{prefix}w:double": ChannelDouble(
                value=0.0, **dict(limits, lower_ctrl_limit=-100.0, upper_ctrl_limit=100.0)),
            f"{prefix}w:float": ChannelFloat(value=0.0, precision=2),
            f"{prefix}w:long": ChannelInteger(value=0),
            f"{prefix}w:short": ChannelShort(value=0),
            f"{prefix}w:char": ChannelByte(value=0),
            f"{prefix}w:enum": ChannelEnum(value="Off", enum_strings=list(ENUM_STRINGS)),
            f"{prefix}w:string_array": ChannelString(value=["a", "b", "c"], max_length=3),
            f"{prefix}w:waveform": ChannelDouble(value=[0.0] * 10, max_length=10),
            f"{prefix}w:short_waveform": ChannelShort(value=[0] * 5, max_length=5),
            f"{prefix}w:char_waveform": ChannelChar(value="initial", max_length=64),
            f"{prefix}w:readonly": ReadOnlyDouble(value=42.0),
        }
    )
    pvdb.update(Records(prefix=prefix).pvdb)
    for i in range(bulk):
        pvdb[f"{prefix}bulk:{i:04d}"] = ChannelDouble(value=float(i), precision=1)
    for i in range(changing):
        pvdb[f"{prefix}changing:{i:04d}"] = ChannelDouble(value=0.0, precision=3)
    return pvdb


async def _count_forever(channel) -> None:
    value = 0
    while True:
        await asyncio.sleep(1.0)
        value += 1
        await channel.write(value)


async def _change_fast(channels: list, waveform) -> None:
    """``fast`` and the ``changing:NNNN`` PVs: a new value FAST_HZ times a second; the fast
    waveform: a sine that moves along."""
    import numpy as np

    step = 0
    phase = np.arange(FAST_WAVEFORM_LENGTH) / 100.0
    while True:
        await asyncio.sleep(1.0 / FAST_HZ)
        step += 1
        value = math.sin(step / 10)
        for channel in channels:
            await channel.write(value)
        await waveform.write(np.sin(phase + step / 10))


def run_caproto(prefix: str, bulk: int, changing: int = 0) -> None:
    from caproto.asyncio.server import start_server

    pvdb = caproto_pvdb(prefix, bulk, changing)

    async def started(async_lib) -> None:
        print(f"{READY_LINE} caproto {len(pvdb)} PVs", flush=True)
        fast = [pvdb[f"{prefix}fast"]] + [pvdb[f"{prefix}changing:{i:04d}"]
                                         for i in range(changing)]
        await asyncio.gather(_count_forever(pvdb[f"{prefix}counter"]),
                             _change_fast(fast, pvdb[f"{prefix}fast_waveform"]))

    asyncio.run(start_server(pvdb, interfaces=[LOOPBACK], startup_hook=started))


def run_softioc(prefix: str, bulk: int) -> None:
    """Real EPICS base records through pythonSoftIOC (needs the ``test`` extra)."""
    import numpy as np
    from epicscorelibs.ioc import dbCore
    from softioc import asyncio_dispatcher, builder, softioc

    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    builder.SetDeviceName(prefix.rstrip(":"))
    builder.aIn(
        "ai", initial_value=3.14159, EGU="degC", PREC=2, LOPR=0, HOPR=100,
        HIHI=90, HIGH=80, LOW=2, LOLO=1, HHSV="MAJOR", HSV="MINOR", LSV="MINOR", LLSV="MAJOR",
    )
    builder.aIn("ai_alarm", initial_value=95.0, EGU="degC", PREC=1, HIHI=90, HHSV="MAJOR")
    builder.aOut("ao", initial_value=1.5, DRVL=-10, DRVH=10, EGU="A", PREC=3)
    builder.longIn("longin", initial_value=12345, EGU="counts")
    builder.WaveformIn("waveform", np.linspace(0.0, 1.0, 50))
    builder.WaveformIn("wf_float", np.arange(10, dtype=np.float32) / 4)
    builder.WaveformIn("wf_short", np.arange(-5, 5, dtype=np.int16))
    builder.WaveformIn("wf_long", np.arange(10, dtype=np.int32) * 1000)
    builder.WaveformIn("wf_char", np.frombuffer(b"bytes\x00\x01\xff", dtype=np.uint8))
    builder.mbbIn("mbbi", "Zero", "One", ("Two", "MINOR"), initial_value=1)
    builder.stringIn("stringin", initial_value="softioc string")
    # Writable records (see the module docstring); w:readonly is in the READONLY access group.
    builder.aOut("w:ao", initial_value=0.0, DRVL=-100, DRVH=100, PREC=3)
    builder.longOut("w:longout", initial_value=0)
    builder.mbbOut("w:mbbo", "Zero", "One", "Two", initial_value=0)
    builder.stringOut("w:stringout", initial_value="initial")
    builder.WaveformOut("w:waveform", np.zeros(10))
    builder.WaveformOut("w:wf_short", np.zeros(5, dtype=np.int16))
    builder.longStringOut("w:long_string", initial_value="initial", length=64)

    async def busy(value: float) -> None:
        await asyncio.sleep(BUSY_SECONDS)

    builder.aOut("w:busy", initial_value=0.0, on_update=busy, blocking=True)
    builder.aOut("w:readonly", initial_value=42.0, ASG="READONLY")
    for i in range(bulk):
        builder.aIn(f"bulk:{i:04d}", initial_value=float(i), PREC=1)
    builder.LoadDatabase()
    with tempfile.TemporaryDirectory(prefix="mtango-softioc-") as folder:
        acf = Path(folder) / "write.acf"
        acf.write_text(WRITE_ACF)
        dbCore.asSetFilename(str(acf).encode())  # read once, by iocInit
        softioc.iocInit(dispatcher, enable_pva=False)
    print(f"{READY_LINE} softioc", flush=True)
    threading.Event().wait()


def _exit_with_parent() -> None:
    """A test run that is killed must not leave IOCs behind holding their ports."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mtango.demo.ioc", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--flavor", choices=("caproto", "softioc"), default="caproto")
    parser.add_argument("--prefix", default=DEMO_PREFIX)
    parser.add_argument("--port", type=int, help="CA server port (default: from the environment)")
    parser.add_argument("--bulk", type=int, default=0, help="extra <prefix>bulk:NNNN PVs")
    parser.add_argument("--changing", type=int, default=0,
                        help="extra <prefix>changing:NNNN PVs changing 10 times a second (caproto)")
    parser.add_argument("--exit-with-parent", action="store_true")
    args = parser.parse_args(argv)
    if args.port:
        os.environ.update(server_env(args.port))
    if args.exit_with_parent:
        _exit_with_parent()
    if args.flavor == "softioc":
        run_softioc(args.prefix, args.bulk)
    else:
        run_caproto(args.prefix, args.bulk, args.changing)


# -- the launcher (runs in the parent) -------------------------------------------------------------


@dataclass
class Ioc:
    """A running IOC child process on ``127.0.0.1:port``."""

    flavor: str
    prefix: str
    port: int
    workdir: Path
    bulk: int = 0
    changing: int = 0
    managed: ManagedProcess | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def pv(self, suffix: str) -> str:
        return f"{self.prefix}{suffix}"

    def bulk_names(self) -> list[str]:
        return [self.pv(f"bulk:{i:04d}") for i in range(self.bulk)]

    @property
    def running(self) -> bool:
        return self.managed is not None and self.managed.process.poll() is None

    def start(self, timeout: float = 60.0) -> Ioc:
        args = [
            sys.executable, "-m", "mtango.demo.ioc", "--flavor", self.flavor,
            "--prefix", self.prefix, "--bulk", str(self.bulk), "--changing", str(self.changing),
            "--exit-with-parent",
        ]
        env = clean_env(**server_env(self.port))
        name = f"ioc-{self.flavor}-{self.port}"
        log = self.workdir / f"{name}.log"
        started = log.read_text(errors="replace").count(READY_LINE) if log.exists() else 0
        self.managed = spawn(name, args, env, self.workdir)
        try:
            wait_until(
                lambda: self.managed.output().count(READY_LINE) > started,
                timeout,
                f"{self.flavor} IOC on port {self.port}",
                self.managed.process,
            )
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop()

    def restart(self, timeout: float = 60.0) -> Ioc:
        self.stop()
        return self.start(timeout)


def start_ioc(
    flavor: str = "caproto",
    prefix: str = DEMO_PREFIX,
    port: int | None = None,
    bulk: int = 0,
    workdir: Path | None = None,
    timeout: float = 60.0,
    changing: int = 0,
) -> Ioc:
    """Start an IOC on its own loopback port and wait until it serves."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="mtango-ioc-"))
    ioc = Ioc(flavor, prefix, port or free_port(udp=True), workdir, bulk, changing)
    ioc.start(timeout)
    atexit.register(ioc.stop)
    return ioc


if __name__ == "__main__":
    main()
