"""
What the Wazuh 3.x API tells of a manager, read from the Wazuh installation
this daemon runs beside (its home): the daemons' status, the installation's
information, C{ossec.conf} as JSON, and analysisd's statistics files.

Everything here is blocking file reading: run it in a thread.  A home
without a Wazuh manager (a lab node) answers what is there: every daemon
but this one stopped, no statistics (1308), its own configuration.
"""

from __future__ import annotations

import calendar
import glob
import os
import time
import xml.etree.ElementTree as ElementTree
from typing import Any

from ..home import WazuhHome
from .envelope import ApiError

#: The daemons of a Wazuh 3.13 manager, as C{/manager/status} lists them.
DAEMONS = (
    "ossec-agentlessd", "ossec-analysisd", "ossec-authd", "ossec-csyslogd", "ossec-dbd",
    "ossec-monitord", "ossec-execd", "ossec-integratord", "ossec-logcollector", "ossec-maild",
    "ossec-remoted", "ossec-reportd", "ossec-syscheckd", "wazuh-clusterd", "wazuh-modulesd",
)

#: The day names of the weekly statistics, Sunday first (analysisd's folders 0-6).
WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def daemonStatus(home: WazuhHome) -> dict[str, str]:
    """Each daemon, C{running} or C{stopped} by its PID file in C{var/run} (this one running)."""
    result = {}
    for daemon in DAEMONS:
        running = daemon == "wazuh-clusterd"
        for pidFile in glob.glob(home.path("var", "run", f"{glob.escape(daemon)}-*.pid")):
            pid = os.path.basename(pidFile)[len(daemon) + 1 : -len(".pid")]
            if pid.isdigit() and os.path.exists(f"/proc/{pid}"):
                running = True
        result[daemon] = "running" if running else "stopped"
    return result


def installation(home: WazuhHome) -> dict[str, str]:
    """The fields of C{etc/ossec-init.conf} (C{VERSION}, C{DATE}, C{TYPE}...), or none."""
    fields: dict[str, str] = {}
    try:
        with open(home.path("etc", "ossec-init.conf"), encoding="utf-8", errors="replace") as f:
            for line in f:
                name, equals, value = line.strip().partition("=")
                if equals:
                    fields[name.strip()] = value.strip().strip('"')
    except OSError:
        pass
    return fields


def rulesetVersion(home: WazuhHome) -> str:
    try:
        with open(home.path("ruleset", "VERSION"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("REVISION"):
                    return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return "N/A"


def ossecConfJson(home: WazuhHome, section: str, field: str) -> Any:
    """
    C{etc/ossec.conf} as JSON, or one section of it (1102 if there is none),
    or one field of that section (1103): each section is an object of its
    children's texts; a tag given several times is a list.
    """
    try:
        with open(home.path("etc", "ossec.conf"), "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        raise ApiError(1101, f"etc/ossec.conf: {e.strerror or e}") from None
    try:
        root = ElementTree.fromstring(f"<wazuhcluster-conf>{text}</wazuhcluster-conf>")
    except ElementTree.ParseError as e:
        raise ApiError(1113, f"etc/ossec.conf line {e.position[0]}") from None
    result: dict[str, Any] = {}
    for config in root:
        if config.tag != "ossec_config":
            continue
        for element in config:
            _add(result, element.tag, _json(element))
    if not section:
        return result
    if section not in result:
        raise ApiError(1102, f"{section!r}; the sections are {', '.join(result)}")
    value = result[section]
    if not field:
        return value
    if not isinstance(value, dict) or field not in value:
        raise ApiError(1103, f"{field!r} in section {section!r}")
    return value[field]


def _json(element: ElementTree.Element) -> Any:
    if len(element) == 0 and not element.attrib:
        return (element.text or "").strip()
    value: dict[str, Any] = {}
    for name, attribute in element.attrib.items():
        value[name] = attribute
    for child in element:
        _add(value, child.tag, _json(child))
    text = (element.text or "").strip()
    if text:
        value["item"] = text
    return value


def _add(target: dict[str, Any], name: str, value: Any) -> None:
    if name not in target:
        target[name] = value
    elif isinstance(target[name], list):
        target[name].append(value)
    else:
        target[name] = [target[name], value]


def totals(home: WazuhHome, date: str) -> list[dict[str, Any]]:
    """
    analysisd's totals of one day (C{YYYYMMDD}, default today):
    C{stats/totals/YEAR/Mon/ossec-totals-DD.log}, one item an hour.
    """
    if not date:
        date = time.strftime("%Y%m%d")
    try:
        year, month, day = int(date[:4]), int(date[4:6]), int(date[6:8])
        time.strptime(date, "%Y%m%d")
    except ValueError:
        raise ApiError(1307, f"{date!r} is not a date") from None
    path = home.path("stats", "totals", str(year), calendar.month_abbr[month], f"ossec-totals-{day:02d}.log")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise ApiError(1308, f"no statistics for {year}-{month:02d}-{day:02d}") from None
    hours: list[dict[str, Any]] = []
    alerts: list[dict[str, int]] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            if "--" in line:
                hour, total, events, syscheck, firewall = (int(p) for p in line.split("--"))
                hours.append({
                    "hour": hour, "alerts": alerts, "totalAlerts": total,
                    "events": events, "syscheck": syscheck, "firewall": firewall,
                })
                alerts = []
            else:
                _, sigid, level, times = (int(p) for p in line.split("-"))
                alerts.append({"sigid": sigid, "level": level, "times": times})
        except ValueError:
            raise ApiError(1309, f"{path}: {line[:80]!r}") from None
    return hours


def _number(path: str) -> int | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None


def hourly(home: WazuhHome) -> dict[str, Any]:
    """
    Alerts per hour on average: C{stats/hourly-average/0..23} (a missing
    hour is 0), and the days they count, C{stats/hourly-average/24}.
    """
    return _averages(home.path("stats", "hourly-average"), "averages")


def weekly(home: WazuhHome) -> dict[str, Any]:
    """For each week day, the same from C{stats/weekly-average/0..6/}, Sunday first."""
    return {
        name: _averages(home.path("stats", "weekly-average", str(number)), "hours")
        for number, name in enumerate(WEEKDAYS)
    }


def _averages(folder: str, key: str) -> dict[str, Any]:
    return {
        key: [_number(os.path.join(folder, str(hour))) or 0 for hour in range(24)],
        "interactions": _number(os.path.join(folder, "24")) or 0,
    }
