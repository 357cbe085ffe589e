"""
Read the ``<cluster>`` section of a Wazuh ``ossec.conf``.

The node's identity, its role and the master's address all come from this one
section, so this module turns it into a frozen L{ClusterConfig} and refuses a
configuration that would make the node misbehave, with a one-line message that
names the element, the file and the fix.  Wazuh's manager reads the same file
with a lenient XML reader; this module accepts what Wazuh accepts (several
``<ossec_config>`` blocks, an XML declaration, C{&} and C{<} in free text,
C{--} in comments) while still reporting real syntax errors at the line and
column of the real file.
"""

from __future__ import annotations

import bisect
import errno
import ipaddress
import re
import socket
import xml.parsers.expat as expat

from typing import Callable

from attrs import define, field, frozen

__all__ = [
    "ClusterConfig",
    "ConfigError",
    "load_cluster_config",
    "local_address_problem",
    "parse_cluster_config",
]

DEFAULT_PORT = 1516
DEFAULT_BIND_ADDR = "0.0.0.0"

#: Values that Wazuh's stock configuration and documentation put in
#: ``<node>`` as placeholders; Wazuh refuses them too.
NODE_PLACEHOLDERS = ("NODE_IP", "0.0.0.0", "localhost", "127.0.1.1")

#: Characters Wazuh's own configuration reader allows in a cluster name.
_NAME_CHARS = frozenset(
    "!\"#$%&'-.0123456789:<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_"
    "abcdefghijklmnopqrstuvwxyz{|}~"
)
_NODE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_NODE_NAME_MAX = 64
_KEY = re.compile(r"[A-Za-z0-9]{32}")
_PORT_RANGE = (1025, 65535)
_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+")
_TLS_TAGS = ("ca_cert", "node_cert", "node_key")
_OPTION_TAGS = frozenset(
    {
        "name",
        "node_name",
        "key",
        "node_type",
        "port",
        "bind_addr",
        "nodes",
        "hidden",
        "disabled",
        *_TLS_TAGS,
    }
)


class ConfigError(Exception):
    """
    A configuration problem the operator must fix before the node can start.

    C{str(err)} is one line that starts with the file, names the element and
    says what to do, so it can go to the log or the terminal unchanged.
    """


class NoClusterSection(ConfigError):
    """
    The file holds no C{<cluster>} section: a standalone manager, for tools
    that care.  C{misplaced} says whether a C{<cluster>} was written outside
    every C{<ossec_config>} block (a mistake rather than a choice).
    """

    def __init__(self, message: str, misplaced: bool = False) -> None:
        super().__init__(message)
        self.misplaced = misplaced


def _tuple_of_str(value: object) -> tuple[str, ...]:
    """Accept any iterable of addresses for L{ClusterConfig.nodes}."""
    return tuple(value)  # type: ignore[arg-type]


@frozen
class ClusterConfig:
    """
    The validated ``<cluster>`` section: who this node is and where its master is.

    It is frozen so that every part of the daemon sees the configuration the
    node started with.  C{key} is left out of C{repr()} so that logging the
    configuration does not leak the cluster secret.  When C{disabled} is true
    nothing else was validated (Wazuh ships a disabled section with an empty
    key and a placeholder address).
    """

    name: str
    node_name: str
    key: str = field(repr=False)
    node_type: str
    port: int = DEFAULT_PORT
    bind_addr: str = DEFAULT_BIND_ADDR
    nodes: tuple[str, ...] = field(default=(), converter=_tuple_of_str)
    hidden: bool = False
    disabled: bool = False
    ca_cert: str | None = None
    node_cert: str | None = None
    node_key: str | None = None

    @property
    def master_address(self) -> str:
        """
        The master's IP address or DNS name: the first entry of C{<nodes>}.

        It is empty only for a disabled cluster that lists no node.
        """
        return self.nodes[0] if self.nodes else ""

    @property
    def is_master(self) -> bool:
        """Whether this node is the cluster's master."""
        return self.node_type == "master"



def read_config_text(
    path: str, what: str, error: type[ConfigError], missing_ok: bool = False
) -> str | None:
    """
    The UTF-8 text of a configuration file, or L{None} for a missing file
    when C{missing_ok}; any other problem raises C{error} naming the file.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise error(f"{path}: cannot read the {what} (no such file); check the path") from None
    except OSError as e:
        reason = e.strerror or str(e)
        raise error(
            f"{path}: cannot read the {what} ({reason}); check the path and that this user may read it"
        ) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise error(f"{path}:{line}: the {what} is not UTF-8 text; save it as UTF-8") from None


def local_address_problem(address: str) -> str | None:
    """
    Why this machine cannot listen on C{address} (an IP address), or L{None}
    when it can: the address belongs to no interface of this host.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
        except OSError as e:
            if e.errno in (errno.EADDRNOTAVAIL, errno.EINVAL):
                return e.strerror or str(e)
    return None


def load_cluster_config(
    path: str, localProblem: Callable[[str], str | None] | None = None
) -> tuple[ClusterConfig, list[str]]:
    """
    Read the ``ossec.conf`` at C{path} and return its cluster configuration.

    The second item is a list of warning sentences (old or unknown options)
    for the caller to log.  Every problem, including an unreadable file,
    raises L{ConfigError}.  With C{localProblem} (such as
    L{local_address_problem}), a master's C{<bind_addr>} must also be an
    address of this machine.
    """
    text = read_config_text(path, "configuration file", ConfigError)
    assert text is not None
    return parse_cluster_config(text, path, localProblem)


def parse_cluster_config(
    text: str, source: str, localProblem: Callable[[str], str | None] | None = None
) -> tuple[ClusterConfig, list[str]]:
    """
    Parse the text of an ``ossec.conf`` and return its cluster configuration.

    C{source} is the file name used in messages.  Like Wazuh, only
    ``<cluster>`` elements directly inside ``<ossec_config>`` blocks count, and
    when there are several, later elements override earlier ones one by one.
    Returns the configuration and a list of warning sentences.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    root = _parse_xml(text, source)
    return _read_cluster(root, source, localProblem)


# ---------------------------------------------------------------------------
# Reading the file as Wazuh does.


@define
class _Element:
    """A parsed XML element: just what reading the configuration needs."""

    tag: str
    line: int
    children: list[_Element] = field(factory=list)
    text_parts: list[str] = field(factory=list)

    @property
    def text(self) -> str:
        """The element's own text, without its children's, stripped."""
        return "".join(self.text_parts).strip()


class _OffsetMap:
    """
    Map offsets in the text given to the XML parser back to the real file.

    The text is the file with a synthetic root element around it and a few
    lenient fixes; errors must still point at the operator's file.
    """

    def __init__(self) -> None:
        self._parsed_starts: list[int] = []
        self._original_starts: list[int] = []
        self._linear: list[bool] = []

    def add(self, parsed_start: int, original_start: int, linear: bool) -> None:
        """Record a piece: where it starts in both texts and whether it is a copy."""
        self._parsed_starts.append(parsed_start)
        self._original_starts.append(original_start)
        self._linear.append(linear)

    def original(self, parsed_offset: int) -> int:
        """The offset in the file of a character of the parsed text."""
        i = max(bisect.bisect_right(self._parsed_starts, parsed_offset) - 1, 0)
        if self._linear[i]:
            return self._original_starts[i] + parsed_offset - self._parsed_starts[i]
        return self._original_starts[i]


_ROOT = "wazuhcluster_ossec_conf_root"
_OPEN_ROOT = f"<{_ROOT}>"
_CLOSE_ROOT = f"</{_ROOT}>"

# Comments and CDATA first, so that nothing inside them is touched; then the
# same leniencies as Wazuh's Python reader (wazuh.core.utils.load_wazuh_xml).
_LENIENT = re.compile(
    r"(?P<comment><!--(?P<body>.*?)-->)"
    r"|(?P<cdata><!\[CDATA\[.*?\]\]>)"
    r"|(?P<bom>\A\ufeff)"
    r"|(?P<declaration><\?xml[ \t\n].*?\?>)"
    r"|(?P<backslash_lt>\\<(?!/))"
    r"|(?P<amp>&(?!(?:amp|lt|gt|apos|quot|#[0-9]+|#x[0-9A-Fa-f]+);))"
    r"|(?P<lt><(?![A-Za-z_:/!?]))",
    re.DOTALL,
)


def _lenient_replacement(match: re.Match[str]) -> str:
    """What one lenient fix puts in place of the matched text."""
    kind = match.lastgroup
    if kind == "comment":
        # "--" and a final "-" are illegal in XML comments but common in
        # ossec.conf; the comment's content does not matter.
        return "<!--" + match.group("body").replace("-", " ") + "-->"
    if kind == "cdata":
        return match.group()
    if kind in ("bom", "declaration"):
        # Keep the newlines so that line numbers stay those of the file.
        return re.sub(r"[^\n]", " ", match.group())
    if kind == "amp":
        return "&amp;"
    return "&lt;"


def _make_parsable(text: str) -> tuple[str, _OffsetMap]:
    """
    Turn an ``ossec.conf`` into one XML document, and say how to map back.

    Several ``<ossec_config>`` blocks become children of a synthetic root.
    Every change keeps the newlines, so line numbers are unchanged.
    """
    offsets = _OffsetMap()
    pieces = [_OPEN_ROOT]
    offsets.add(0, 0, False)
    parsed = len(_OPEN_ROOT)
    original = 0
    for match in _LENIENT.finditer(text):
        start, end = match.span()
        if start > original:
            offsets.add(parsed, original, True)
            pieces.append(text[original:start])
            parsed += start - original
        replacement = _lenient_replacement(match)
        offsets.add(parsed, start, len(replacement) == end - start)
        pieces.append(replacement)
        parsed += len(replacement)
        original = end
    if original < len(text):
        offsets.add(parsed, original, True)
        pieces.append(text[original:])
        parsed += len(text) - original
    offsets.add(parsed, len(text), False)
    pieces.append(_CLOSE_ROOT)
    return "".join(pieces), offsets


def _line_column(text: str, offset: int) -> tuple[int, int]:
    """The 1-based line and column of a character offset, as editors show them."""
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


def _char_offset(data: bytes, byte_index: int) -> int:
    """The character offset of a byte offset into UTF-8 C{data}."""
    try:
        return len(data[:byte_index].decode("utf-8", "surrogatepass"))
    except UnicodeDecodeError:
        return len(data[:byte_index].decode("utf-8", "replace"))


def _parse_xml(text: str, source: str) -> _Element:
    """
    Parse the whole file into L{_Element}s under the synthetic root.

    Raises L{ConfigError} with the real file's line and column when the XML
    is broken.
    """
    parsable, offsets = _make_parsable(text)
    data = parsable.encode("utf-8", "surrogatepass")
    parser = expat.ParserCreate()
    parser.buffer_text = True
    top = _Element(tag="", line=0)
    stack = [top]

    def start(tag: str, attributes: dict[str, str]) -> None:
        element = _Element(tag=tag, line=parser.CurrentLineNumber)
        stack[-1].children.append(element)
        stack.append(element)

    def end(tag: str) -> None:
        stack.pop()

    def characters(data: str) -> None:
        stack[-1].text_parts.append(data)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        parsed_offset = _char_offset(data, parser.ErrorByteIndex)
        line, column = _line_column(text, offsets.original(parsed_offset))
        reason = expat.ErrorString(e.code)
        unclosed_at_end = (
            e.code == expat.errors.codes[expat.errors.XML_ERROR_TAG_MISMATCH]
            and parsed_offset >= len(parsable) - len(_CLOSE_ROOT)
            and len(stack) > 2
        )
        if unclosed_at_end:
            # The error is in our closing root tag: an element of the file
            # was never closed, and we know which.
            unclosed = stack[-1]
            reason = (
                f"<{unclosed.tag}> opened at line {unclosed.line} is not closed "
                f"by the end of the file"
            )
        raise ConfigError(
            f"{source}: XML does not parse at line {line}, column {column}: "
            f"{reason}; fix the XML there"
        ) from None
    return top.children[0]


# ---------------------------------------------------------------------------
# Reading and checking the <cluster> section.


def _show(value: str) -> str:
    """Quote a value from the file for a one-line message, shortened if long."""
    if len(value) > 60:
        value = value[:57] + "..."
    return repr(value)


@define
class _Options:
    """The merged ``<cluster>`` elements, with what messages need."""

    source: str
    cluster_line: int
    elements: dict[str, _Element]

    def element(self, tag: str) -> _Element | None:
        """The last ``<tag>`` given, if any."""
        return self.elements.get(tag)

    def value(self, tag: str) -> str | None:
        """The stripped text of the last ``<tag>``, or L{None} if absent."""
        element = self.elements.get(tag)
        return None if element is None else element.text

    def where(self, tag: str) -> str:
        """C{FILE:LINE} of ``<tag>``, or of the ``<cluster>`` section without it."""
        element = self.elements.get(tag)
        line = self.cluster_line if element is None else element.line
        return f"{self.source}:{line}"

    def error(self, tag: str, message: str) -> ConfigError:
        """A L{ConfigError} located at ``<tag>``."""
        return ConfigError(f"{self.where(tag)}: {message}")


def _read_cluster(
    root: _Element, source: str, localProblem: Callable[[str], str | None] | None = None
) -> tuple[ClusterConfig, list[str]]:
    """Merge every ``<cluster>`` section of the file and check the result."""
    sections = [
        child
        for block in root.children
        if block.tag == "ossec_config"
        for child in block.children
        if child.tag == "cluster"
    ]
    stray = [child for child in root.children if child.tag == "cluster"]
    warnings = [
        f"<cluster> at line {element.line} of {source} is outside any "
        f"<ossec_config> block and is ignored: move it inside one"
        for element in stray
    ]
    if not sections:
        hint = (
            f" (the one at line {stray[0].line} is outside <ossec_config>)"
            if stray
            else ""
        )
        raise NoClusterSection(
            f"{source}: no <cluster> section found inside an <ossec_config> "
            f"block{hint}; add one to run this node in a cluster",
            misplaced=bool(stray),
        )
    elements: dict[str, _Element] = {}
    for section in sections:
        for element in section.children:
            if element.tag in _OPTION_TAGS:
                elements[element.tag] = element
            elif element.tag == "interval":
                warnings.append(
                    f"<interval> in <cluster> of {source} is no longer used and "
                    f"is ignored: remove it"
                )
            else:
                warnings.append(
                    f"<{element.tag}> in <cluster> of {source} (line "
                    f"{element.line}) is not a cluster option this daemon knows "
                    f"and is ignored: check its spelling or remove it"
                )
    options = _Options(source, sections[-1].line, elements)
    disabled = _yes_no(options, "disabled", default=False)
    if disabled:
        return _disabled_config(options), warnings
    return _enabled_config(options, warnings, localProblem), warnings


def _yes_no(options: _Options, tag: str, default: bool) -> bool:
    """Read a yes/no element (any case)."""
    value = options.value(tag)
    if value is None:
        return default
    if value.lower() == "yes":
        return True
    if value.lower() == "no":
        return False
    raise options.error(
        tag, f"<{tag}> is {_show(value)}, but must be yes or no; write one of those"
    )


def _disabled_config(options: _Options) -> ClusterConfig:
    """
    The configuration of a disabled cluster, checked no further.

    Values are kept where they make sense so that tools can still show them;
    Wazuh's defaults fill the gaps.
    """
    port = options.value("port")
    return ClusterConfig(
        name=options.value("name") or "wazuh",
        node_name=options.value("node_name") or "node01",
        key=options.value("key") or "",
        node_type=(options.value("node_type") or "master").lower(),
        port=int(port) if port and port.isascii() and port.isdigit() and len(port) <= 5 else DEFAULT_PORT,
        bind_addr=options.value("bind_addr") or DEFAULT_BIND_ADDR,
        nodes=tuple(
            node.text
            for node in _node_elements(options)
            if node.text
        ),
        hidden=(options.value("hidden") or "").lower() == "yes",
        disabled=True,
        ca_cert=options.value("ca_cert") or None,
        node_cert=options.value("node_cert") or None,
        node_key=options.value("node_key") or None,
    )


def _enabled_config(
    options: _Options, warnings: list[str], localProblem: Callable[[str], str | None] | None = None
) -> ClusterConfig:
    """Check every option of an enabled cluster and build its configuration."""
    name = _name(options)
    node_name = _node_name(options)
    key = _key(options)
    node_type = _node_type(options, warnings)
    port = _port(options)
    bind_addr = _bind_addr(options)
    if node_type == "master" and localProblem is not None:
        _bind_addr_is_local(options, bind_addr, localProblem)
    hidden = _yes_no(options, "hidden", default=False)
    nodes = _nodes(options, warnings)
    ca_cert, node_cert, node_key = _tls(options)
    return ClusterConfig(
        name=name,
        node_name=node_name,
        key=key,
        node_type=node_type,
        port=port,
        bind_addr=bind_addr,
        nodes=nodes,
        hidden=hidden,
        disabled=False,
        ca_cert=ca_cert,
        node_cert=node_cert,
        node_key=node_key,
    )


def _required(options: _Options, tag: str, fix: str) -> str:
    """The non-empty value of a required element."""
    value = options.value(tag)
    if value is None:
        raise options.error(tag, f"<cluster> has no <{tag}>; add one: {fix}")
    if not value:
        raise options.error(tag, f"<{tag}> is empty; {fix}")
    return value


def _name(options: _Options) -> str:
    """The cluster name, which every node of the cluster must share."""
    name = _required(
        options, "name", "put the cluster's name there, the same on every node"
    )
    bad = sorted(set(name) - _NAME_CHARS)
    if bad:
        raise options.error(
            "name",
            f"<name> {_show(name)} contains {_show(''.join(bad))}, which Wazuh "
            f"does not allow in a cluster name; use letters, digits and "
            f"punctuation such as - _ .",
        )
    return name


def _node_name(options: _Options) -> str:
    """This node's name; it appears in logs and file names."""
    name = _required(
        options, "node_name", "put this node's own name there, e.g. node01"
    )
    if len(name) > _NODE_NAME_MAX:
        raise options.error(
            "node_name",
            f"<node_name> is {len(name)} characters long, but at most "
            f"{_NODE_NAME_MAX} are allowed; choose a shorter name",
        )
    if not _NODE_NAME.fullmatch(name):
        raise options.error(
            "node_name",
            f"<node_name> {_show(name)} may hold only letters, digits, '-', '_' "
            f"and '.'; rename the node, e.g. node01",
        )
    if not name.strip("."):
        raise options.error(
            "node_name",
            f"<node_name> {_show(name)} cannot be used in file names; choose a "
            f"name with letters or digits, e.g. node01",
        )
    return name


def _key(options: _Options) -> str:
    """The shared cluster key; it is never repeated in a message."""
    fix = (
        "put a key of 32 letters and digits there, the same on every node; "
        "generate one with `openssl rand -hex 16`"
    )
    key = _required(options, "key", fix)
    if not _KEY.fullmatch(key):
        odd = any(not ("0" <= c <= "9" or "a" <= c.lower() <= "z") for c in key)
        what = ", some of them neither letters nor digits" if odd else ""
        raise options.error(
            "key",
            f"<key> must be exactly 32 letters and digits, but the one given has "
            f"{len(key)} characters{what}; generate one with "
            f"`openssl rand -hex 16` and use it on every node",
        )
    return key


def _node_type(options: _Options, warnings: list[str]) -> str:
    """master or worker; Wazuh's old name for worker, client, is accepted."""
    node_type = _required(
        options, "node_type", "write <node_type>master</node_type> or worker"
    ).lower()
    if node_type == "client":
        warnings.append(
            f"<node_type> client in <cluster> of {options.source} is the old name "
            f"of worker and is read as worker: change it to worker"
        )
        return "worker"
    if node_type not in ("master", "worker"):
        raise options.error(
            "node_type",
            f"<node_type> is {_show(options.value('node_type') or '')}, but must "
            f"be master or worker; write one of those",
        )
    return node_type


def _port(options: _Options) -> int:
    """The TCP port the master listens on and workers connect to."""
    value = options.value("port")
    if value is None:
        return DEFAULT_PORT
    low, high = _PORT_RANGE
    if value.isascii() and value.isdigit() and len(value) <= 5 and low <= int(value) <= high:
        return int(value)
    raise options.error(
        "port",
        f"<port> is {_show(value)}, but must be a whole number from {low} to "
        f"{high}; use the cluster port, {DEFAULT_PORT} unless you changed it "
        f"on every node",
    )


def _bind_addr(options: _Options) -> str:
    """The local address the master listens on."""
    value = options.value("bind_addr")
    if value is None:
        return DEFAULT_BIND_ADDR
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise options.error(
            "bind_addr",
            f"<bind_addr> is {_show(value)}, which is not an IP address; put a "
            f"local IP address to listen on, or 0.0.0.0 for all of them",
        ) from None
    return value


def _bind_addr_is_local(options: _Options, address: str, localProblem: Callable[[str], str | None]) -> None:
    """A master listens on C{<bind_addr>}: refuse an address of another host."""
    problem = localProblem(address)
    if problem is not None:
        raise options.error(
            "bind_addr",
            f"<bind_addr> is {_show(address)}, which is not an address of this machine "
            f"({problem}); put one of its IP addresses, or 0.0.0.0 for all of them",
        )


def _node_elements(options: _Options) -> list[_Element]:
    """The ``<node>`` elements of the last ``<nodes>``."""
    nodes = options.element("nodes")
    if nodes is None:
        return []
    return [child for child in nodes.children if child.tag == "node"]


def _nodes(options: _Options, warnings: list[str]) -> tuple[str, ...]:
    """The master's address, from ``<nodes>``; older files list every node."""
    source = options.source
    fix = "put the master's IP address or DNS name there"
    container = options.element("nodes")
    if container is None:
        raise options.error(
            "nodes",
            "<cluster> has no <nodes>; add one with the master's IP address or "
            "DNS name, e.g. <nodes><node>10.0.0.1</node></nodes>",
        )
    for child in container.children:
        if child.tag != "node":
            warnings.append(
                f"<{child.tag}> in <nodes> of {source} (line {child.line}) is not "
                f"<node> and is ignored: remove it"
            )
    elements = _node_elements(options)
    if not elements:
        raise options.error(
            "nodes",
            "<nodes> lists no <node>; write the master's IP address or DNS name "
            "in one, e.g. <nodes><node>10.0.0.1</node></nodes>",
        )
    addresses = []
    for element in elements:
        address = element.text
        where = f"{source}:{element.line}"
        if not address:
            raise ConfigError(f"{where}: <node> is empty; {fix}")
        if _is_placeholder(address):
            raise ConfigError(
                f"{where}: <node> holds the placeholder {_show(address)}, not an "
                f"address; {fix}"
            )
        if not _is_ip(address) and not _is_dns_name(address):
            raise ConfigError(
                f"{where}: <node> {_show(address)} is neither an IP address nor a "
                f"DNS name; {fix}"
            )
        addresses.append(address)
    if len(addresses) > 1:
        warnings.append(
            f"only the master node should be listed in <nodes> of {source} (line "
            f"{container.line}), but {len(addresses)} are; using the first, "
            f"{addresses[0]}"
        )
    return tuple(addresses)


def _is_placeholder(address: str) -> bool:
    """Whether an address is one that cannot name a master."""
    if address.lower() in {p.lower() for p in NODE_PLACEHOLDERS}:
        return True
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _is_ip(address: str) -> bool:
    """Whether C{address} is an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _is_dns_name(address: str) -> bool:
    """
    Whether C{address} looks like a host name (checked loosely).

    Labels of letters, digits, hyphens (and underscores, common in container
    names); an all-numeric name is a mistyped IPv4 address, not a name.
    """
    name = address[:-1] if address.endswith(".") else address
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
        return False
    return all(_DNS_LABEL.fullmatch(label) for label in labels)


def _tls(options: _Options) -> tuple[str | None, str | None, str | None]:
    """The optional TLS files: all three or none."""
    given = [tag for tag in _TLS_TAGS if options.value(tag) is not None]
    if not given:
        return None, None, None
    for tag in given:
        if not options.value(tag):
            raise options.error(
                tag,
                f"<{tag}> is empty; put the file's path there (absolute, or "
                f"relative to the Wazuh home folder), or remove all of "
                f"<ca_cert>, <node_cert> and <node_key>",
            )
    missing = [tag for tag in _TLS_TAGS if tag not in given]
    if missing:
        names = " and ".join(f"<{tag}>" for tag in missing)
        present = " and ".join(f"<{tag}>" for tag in given)
        raise options.error(
            given[0],
            f"<cluster> sets {present} but not {names}; give all three of "
            f"<ca_cert>, <node_cert> and <node_key>, or none",
        )
    return options.value("ca_cert"), options.value("node_cert"), options.value("node_key")
