"""
Tests for L{wazuhcluster.config}: reading the ``<cluster>`` section of ``ossec.conf``.

Files are written for real into C{self.mktemp()} folders, because the daemon
reads a real file and the messages must name it.
"""

from __future__ import annotations

import os
import shutil
import textwrap

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.home import WazuhHome
from wazuhcluster.config import (
    ClusterConfig,
    ConfigError,
    load_cluster_config,
    local_address_problem,
    parse_cluster_config,
)

KEY = "c98b62a9b6169ac5f67dae55ae4a9088"

# A manager's ossec.conf as Wazuh installs it, with the cluster section of a
# worker in the second of three <ossec_config> blocks.
REALISTIC = textwrap.dedent(
    """\
    <!--
      Wazuh - Manager - Default configuration for ubuntu 22.04
      More info at: https://documentation.wazuh.com
      Mailing list: https://groups.google.com/forum/#!forum/wazuh
    -->

    <ossec_config>
      <global>
        <jsonout_output>yes</jsonout_output>
        <alerts_log>yes</alerts_log>
        <logall>no</logall>
        <logall_json>no</logall_json>
        <email_notification>no</email_notification>
        <smtp_server>smtp.example.wazuh.com</smtp_server>
        <email_from>wazuh@example.wazuh.com</email_from>
        <email_to>recipient@example.wazuh.com</email_to>
        <email_maxperhour>12</email_maxperhour>
        <email_log_source>alerts.log</email_log_source>
        <agents_disconnection_time>10m</agents_disconnection_time>
        <agents_disconnection_alert_time>0</agents_disconnection_alert_time>
        <white_list>127.0.0.1</white_list>
        <white_list>^localhost.localdomain$</white_list>
      </global>

      <alerts>
        <log_alert_level>3</log_alert_level>
        <email_alert_level>12</email_alert_level>
      </alerts>

      <!-- Choose between "plain", "json", or "plain,json" for the format of internal logs -->
      <logging>
        <log_format>plain</log_format>
      </logging>

      <remote>
        <connection>secure</connection>
        <port>1514</port>
        <protocol>tcp</protocol>
        <queue_size>131072</queue_size>
      </remote>

      <!-- Policy monitoring -->
      <rootcheck>
        <disabled>no</disabled>
        <check_files>yes</check_files>
        <check_trojans>yes</check_trojans>
        <check_dev>yes</check_dev>
        <check_sys>yes</check_sys>
        <check_pids>yes</check_pids>
        <check_ports>yes</check_ports>
        <check_if>yes</check_if>

        <!-- Frequency that rootcheck is executed - every 12 hours -->
        <frequency>43200</frequency>

        <rootkit_files>etc/rootcheck/rootkit_files.txt</rootkit_files>
        <rootkit_trojans>etc/rootcheck/rootkit_trojans.txt</rootkit_trojans>

        <skip_nfs>yes</skip_nfs>
      </rootcheck>

      <!-- File integrity monitoring -->
      <syscheck>
        <disabled>no</disabled>

        <!-- Frequency that syscheck is executed default every 12 hours -->
        <frequency>43200</frequency>

        <scan_on_start>yes</scan_on_start>

        <!-- Generate alert when new file detected -->
        <alert_new_files>yes</alert_new_files>

        <!-- Directories to check  (perform all possible verifications) -->
        <directories>/etc,/usr/bin,/usr/sbin</directories>
        <directories>/bin,/sbin,/boot</directories>

        <!-- Files/directories to ignore -->
        <ignore>/etc/mtab</ignore>
        <ignore>/etc/hosts.deny</ignore>
        <ignore type="sregex">.log$|.swp$</ignore>

        <nodiff>/etc/ssl/private.key</nodiff>
        <skip_nfs>yes</skip_nfs>
      </syscheck>

      <command>
        <name>disable-account</name>
        <executable>disable-account</executable>
        <timeout_allowed>yes</timeout_allowed>
      </command>

      <ruleset>
        <!-- Default ruleset -->
        <decoder_dir>ruleset/decoders</decoder_dir>
        <rule_dir>ruleset/rules</rule_dir>
        <rule_exclude>0215-policy_rules.xml</rule_exclude>
        <list>etc/lists/audit-keys</list>

        <!-- User-defined ruleset -->
        <decoder_dir>etc/decoders</decoder_dir>
        <rule_dir>etc/rules</rule_dir>
      </ruleset>

      <auth>
        <disabled>no</disabled>
        <port>1515</port>
        <use_source_ip>no</use_source_ip>
        <purge>yes</purge>
        <use_password>no</use_password>
        <ciphers>HIGH:!ADH:!EXP:!MD5:!RC4:!3DES:!CAMELLIA:@STRENGTH</ciphers>
        <ssl_verify_host>no</ssl_verify_host>
        <ssl_manager_cert>etc/sslmanager.cert</ssl_manager_cert>
        <ssl_manager_key>etc/sslmanager.key</ssl_manager_key>
        <ssl_auto_negotiate>no</ssl_auto_negotiate>
      </auth>
    </ossec_config>

    <ossec_config>
      <!-- This node is a worker of the production cluster -->
      <cluster>
        <name>wazuh</name>
        <node_name>worker-02</node_name>
        <node_type>worker</node_type>
        <key>c98b62a9b6169ac5f67dae55ae4a9088</key>
        <port>1516</port>
        <bind_addr>0.0.0.0</bind_addr>
        <nodes>
            <node>wazuh-master.example.com</node>
        </nodes>
        <hidden>no</hidden>
        <disabled>no</disabled>
      </cluster>
    </ossec_config>

    <ossec_config>
      <localfile>
        <log_format>command</log_format>
        <command>df -P</command>
        <frequency>360</frequency>
      </localfile>

      <localfile>
        <log_format>full_command</log_format>
        <command>last -n 20</command>
        <frequency>360</frequency>
      </localfile>

      <localfile>
        <log_format>syslog</log_format>
        <location>/var/ossec/logs/active-responses.log</location>
      </localfile>
    </ossec_config>
    """
)

# The cluster section of Wazuh's stock manager ossec.conf.
STOCK_CLUSTER = textwrap.dedent(
    """\
    <ossec_config>
      <cluster>
        <name>wazuh</name>
        <node_name>node01</node_name>
        <node_type>master</node_type>
        <key></key>
        <port>1516</port>
        <bind_addr>0.0.0.0</bind_addr>
        <nodes>
            <node>NODE_IP</node>
        </nodes>
        <hidden>no</hidden>
        <disabled>yes</disabled>
      </cluster>
    </ossec_config>
    """
)

GOOD_OPTIONS: dict[str, object] = {
    "name": "wazuh",
    "node_name": "node01",
    "key": KEY,
    "node_type": "master",
    "port": "1516",
    "bind_addr": "0.0.0.0",
    "nodes": ["10.0.0.1"],
    "hidden": "no",
    "disabled": "no",
}


def cluster_conf(**changes: object) -> str:
    """
    An ossec.conf with one cluster section, one element per line.

    Keyword arguments replace the options of L{GOOD_OPTIONS}; C{None} leaves
    the element out; C{nodes} is a list of C{<node>} texts.
    """
    options = {**GOOD_OPTIONS, **changes}
    lines = ["<ossec_config>", "  <cluster>"]
    for tag, value in options.items():
        if value is None:
            continue
        if tag == "nodes":
            assert isinstance(value, list)
            inner = "".join(f"<node>{node}</node>" for node in value)
            lines.append(f"    <nodes>{inner}</nodes>")
        else:
            lines.append(f"    <{tag}>{value}</{tag}>")
    lines += ["  </cluster>", "</ossec_config>", ""]
    return "\n".join(lines)


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first occurrence of C{needle} in C{text}."""
    return text[: text.index(needle)].count("\n") + 1


class ConfigFileTestCase(SynchronousTestCase):
    """Helpers to write ossec.conf files and check what loading them says."""

    def write(self, text: str, name: str = "ossec.conf") -> str:
        """Write C{text} into a new folder and return the file's path."""
        folder = self.mktemp()
        os.mkdir(folder)
        # Under pytest, mktemp() is relative to the project folder: clean up.
        self.addCleanup(shutil.rmtree, os.path.dirname(folder))
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def load(self, text: str) -> tuple[ClusterConfig, list[str], str]:
        """Write C{text} as a file and load it."""
        path = self.write(text)
        config, warnings = load_cluster_config(path)
        return config, warnings, path

    def assertConfigError(self, text: str, *fragments: str, line: int | None = None) -> str:
        """
        Loading C{text} fails with a one-line message, starting with the file
        (and C{line} if given), that contains every fragment; return it.
        """
        path = self.write(text)
        error = self.assertRaises(ConfigError, load_cluster_config, path)
        message = str(error)
        self.assertNotIn("\n", message)
        prefix = f"{path}:{line}: " if line is not None else f"{path}:"
        self.assertTrue(
            message.startswith(prefix), f"{message!r} does not start with {prefix!r}"
        )
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message


class RealFileTests(ConfigFileTestCase):
    """Whole ossec.conf files as Wazuh installs and operators edit them."""

    def test_realistic_multi_block_file(self) -> None:
        """
        The cluster section in the second of several ``<ossec_config>`` blocks,
        among every other section and comments, is read exactly.
        """
        config, warnings, _ = self.load(REALISTIC)
        self.assertEqual(
            config,
            ClusterConfig(
                name="wazuh",
                node_name="worker-02",
                key=KEY,
                node_type="worker",
                port=1516,
                bind_addr="0.0.0.0",
                nodes=("wazuh-master.example.com",),
                hidden=False,
                disabled=False,
            ),
        )
        self.assertEqual(warnings, [])
        self.assertEqual(config.master_address, "wazuh-master.example.com")
        self.assertFalse(config.is_master)

    def test_stock_disabled_cluster(self) -> None:
        """
        Wazuh's stock section (empty key, C{NODE_IP}) loads as a disabled
        cluster, without errors or warnings.
        """
        config, warnings, _ = self.load(STOCK_CLUSTER)
        self.assertTrue(config.disabled)
        self.assertEqual(warnings, [])
        self.assertEqual(
            (config.name, config.node_name, config.node_type, config.port),
            ("wazuh", "node01", "master", 1516),
        )
        self.assertEqual(config.nodes, ("NODE_IP",))

    def test_stock_cluster_in_realistic_file(self) -> None:
        """The stock disabled section also loads from a full multi-block file."""
        start = REALISTIC.index("  <!-- This node")
        end = REALISTIC.index("</ossec_config>", start)
        stock_body = STOCK_CLUSTER.split("\n", 1)[1].rsplit("</ossec_config>", 1)[0]
        text = REALISTIC[:start] + stock_body + REALISTIC[end:]
        config, _, _ = self.load(text)
        self.assertTrue(config.disabled)

    def test_xml_declaration(self) -> None:
        """An ``<?xml ...?>`` declaration before the blocks is accepted."""
        config, _, _ = self.load('<?xml version="1.0" encoding="UTF-8"?>\n' + REALISTIC)
        self.assertEqual(config.node_name, "worker-02")

    def test_declaration_before_every_block(self) -> None:
        """
        Files concatenated from several XML files, each with its declaration,
        are accepted.
        """
        decl = '<?xml version="1.0"?>\n'
        config, _, _ = self.load(decl + "<ossec_config/>\n" + decl + cluster_conf())
        self.assertEqual(config.node_name, "node01")

    def test_byte_order_mark(self) -> None:
        """A UTF-8 byte order mark at the start of the file is accepted."""
        config, _, _ = self.load("\ufeff" + cluster_conf(node_name="bom"))
        self.assertEqual(config.node_name, "bom")

    def test_windows_line_endings(self) -> None:
        """CRLF line endings are read as lines."""
        path = self.write("")
        with open(path, "wb") as f:
            f.write(cluster_conf(node_name="crlf").replace("\n", "\r\n").encode())
        config, _ = load_cluster_config(path)
        self.assertEqual(config.node_name, "crlf")

    def test_lenient_like_wazuh(self) -> None:
        """
        What Wazuh's reader tolerates is tolerated: C{&} and C{<} in free
        text, C{--} inside comments, CDATA.
        """
        text = textwrap.dedent(
            """\
            <ossec_config>
              <!-- old section -- kept for reference --->
              <localfile>
                <log_format>full_command</log_format>
                <command>test -f /tmp/x && echo 1 < /dev/null 2>&1</command>
                <alias>a \\<b</alias>
                <label><![CDATA[ <!-- & ]]></label>
              </localfile>
            </ossec_config>
            """
        ) + cluster_conf(node_name="lenient")
        config, warnings, _ = self.load(text)
        self.assertEqual(config.node_name, "lenient")
        self.assertEqual(warnings, [])

    def test_lenient_values(self) -> None:
        """
        A bare C{&} and a backslash-escaped C{<} are read literally, and
        entities are decoded, as Wazuh reads them.
        """
        config, _, _ = self.load(cluster_conf(name="R&D&amp;X&lt;1\\<2"))
        self.assertEqual(config.name, "R&D&X<1<2")

    def test_parse_cluster_config_uses_source_name(self) -> None:
        """L{parse_cluster_config} reads text and names C{source} in messages."""
        config, _ = parse_cluster_config(cluster_conf(node_name="n9"), "given.conf")
        self.assertEqual(config.node_name, "n9")
        error = self.assertRaises(
            ConfigError, parse_cluster_config, cluster_conf(port="80"), "given.conf"
        )
        self.assertTrue(str(error).startswith("given.conf:"))


class SectionSelectionTests(ConfigFileTestCase):
    """Which ``<cluster>`` elements count, and how several combine."""

    def test_no_cluster_section(self) -> None:
        """A file without a cluster section is an error saying so."""
        without = REALISTIC.replace("<cluster>", "<cluster_x>").replace(
            "</cluster>", "</cluster_x>"
        )
        path = self.write(without)
        error = self.assertRaises(ConfigError, load_cluster_config, path)
        self.assertTrue(
            str(error).startswith(f"{path}: no <cluster> section found"), str(error)
        )

    def test_empty_file(self) -> None:
        """An empty file has no cluster section."""
        self.assertConfigError("", "no <cluster> section found")

    def test_cluster_outside_ossec_config_is_ignored(self) -> None:
        """
        A C{<cluster>} at the top level is not read, and the error says where
        it is.
        """
        text = cluster_conf().replace("<ossec_config>", "").replace("</ossec_config>", "")
        self.assertConfigError(
            text, "no <cluster> section found", "line 2 is outside <ossec_config>"
        )

    def test_cluster_outside_ossec_config_warns(self) -> None:
        """Beside a valid section, a top-level C{<cluster>} is ignored with a warning."""
        stray = "<cluster><node_name>stray</node_name></cluster>\n"
        config, warnings, path = self.load(stray + cluster_conf())
        self.assertEqual(config.node_name, "node01")
        self.assertEqual(
            warnings,
            [
                f"<cluster> at line 1 of {path} is outside any <ossec_config> "
                f"block and is ignored: move it inside one"
            ],
        )

    def test_nested_cluster_is_not_read(self) -> None:
        """A C{<cluster>} deeper than a block's child is not the cluster section."""
        text = "<ossec_config><global><cluster><disabled>yes</disabled></cluster></global></ossec_config>"
        self.assertConfigError(text, "no <cluster> section found")

    def test_later_sections_override_element_by_element(self) -> None:
        """
        With several sections, each element's last value wins, and elements
        given only earlier are kept.
        """
        text = textwrap.dedent(
            f"""\
            <ossec_config>
              <cluster>
                <name>first</name>
                <node_name>node01</node_name>
                <key>{KEY}</key>
                <node_type>master</node_type>
                <port>1600</port>
                <nodes><node>10.0.0.1</node></nodes>
                <disabled>yes</disabled>
              </cluster>
            </ossec_config>
            <ossec_config>
              <cluster>
                <name>second</name>
                <node_type>worker</node_type>
                <nodes><node>10.0.0.2</node></nodes>
                <disabled>no</disabled>
              </cluster>
            </ossec_config>
            """
        )
        config, _, _ = self.load(text)
        self.assertEqual(
            (config.name, config.node_type, config.port, config.nodes, config.disabled),
            ("second", "worker", 1600, ("10.0.0.2",), False),
        )

    def test_repeated_element_last_wins(self) -> None:
        """Inside one section, a repeated element's last value wins."""
        text = cluster_conf().replace(
            "<port>1516</port>", "<port>1600</port><port>1700</port>"
        )
        config, _, _ = self.load(text)
        self.assertEqual(config.port, 1700)

    def test_values_are_stripped(self) -> None:
        """Whitespace and newlines around values are not part of them."""
        config, _, _ = self.load(
            cluster_conf(name="\n  wazuh  ", port=" 1600\n", nodes=["\n   10.0.0.9  \n"])
        )
        self.assertEqual((config.name, config.port, config.nodes), ("wazuh", 1600, ("10.0.0.9",)))


class ParseErrorTests(ConfigFileTestCase):
    """Broken XML is reported at the line and column of the real file."""

    def test_error_in_second_block(self) -> None:
        """
        A mismatched tag in the second block is reported at its line and
        column (1-based), not those of the text given to the parser.
        """
        broken = REALISTIC.replace("<port>1516</port>", "<port>1516</prt>")
        line = line_of(broken, "</prt>")
        column = len("    <port>1516</") + 1  # the tag's name, 1-based
        self.assertEqual(line, 126)  # guard the expectation itself
        self.assertConfigError(
            broken,
            f": XML does not parse at line {line}, column {column}: mismatched tag",
        )

    def test_error_on_first_line(self) -> None:
        """The synthetic root wrapped around the file does not shift columns."""
        message = self.assertConfigError("<ossec_config><a b></ossec_config>")  # at ">"
        self.assertIn(": XML does not parse at line 1, column 19: not well-formed", message)

    def test_error_after_declaration(self) -> None:
        """A removed declaration does not shift columns either."""
        message = self.assertConfigError('<?xml version="1.0"?><ossec_config></x>')
        self.assertIn(": XML does not parse at line 1, column 38: mismatched tag", message)

    def test_column_after_lenient_escapes(self) -> None:
        """
        Escaping C{&} and C{<} for the parser does not shift the columns of
        later errors on the same line.
        """
        plain = "<ossec_config>\n  <x>a xx b  c yy d</y>\n</ossec_config>\n"
        escaped = "<ossec_config>\n  <x>a && b \\<c < d</y>\n</ossec_config>\n"
        self.assertEqual(len(plain), len(escaped))
        expected = ": XML does not parse at line 2, column 22: mismatched tag"
        self.assertConfigError(plain, expected)
        self.assertConfigError(escaped, expected)

    def test_unclosed_block_at_end(self) -> None:
        """
        A block never closed is named, with the line it opened at, and the
        error is placed at the end of the file.
        """
        text = REALISTIC.rsplit("</ossec_config>", 1)[0]
        last_line = text.count("\n") + 1
        opened = text[: text.rindex("<ossec_config>")].count("\n") + 1
        self.assertEqual((opened, last_line), (136, 153))  # guard the expectation
        self.assertConfigError(
            text,
            f": XML does not parse at line {last_line}, column 1: <ossec_config> "
            f"opened at line {opened} is not closed by the end of the file",
        )

    def test_unclosed_element_inside_block(self) -> None:
        """An element left open inside a block is a mismatch at the block's end."""
        text = REALISTIC.replace("  </cluster>\n", "")
        closing = text.index("</ossec_config>", text.index("<cluster>"))
        line = text[:closing].count("\n") + 1
        self.assertConfigError(
            text, f": XML does not parse at line {line}, column 3: mismatched tag"
        )

    def test_unclosed_comment(self) -> None:
        """A comment never closed is reported where it starts."""
        text = cluster_conf() + "\n<!-- end\n"
        self.assertConfigError(text, f"at line {line_of(text, '<!-- end')}, column 1: ")

    def test_non_ascii_before_error(self) -> None:
        """Columns count characters, not UTF-8 bytes."""
        message = self.assertConfigError("<ossec_config><x>ééé</y></ossec_config>")
        self.assertIn("at line 1, column 23: mismatched tag", message)

    @settings(max_examples=200, deadline=None)
    @given(
        comment=st.text(alphabet=" -;>0123456789", max_size=20),
        body=st.text(alphabet=" &;-<=>0123456789.\"'", max_size=30),
    )
    def test_columns_match_file(self, comment: str, body: str) -> None:
        """
        Whatever free text (with C{&}, C{<}, C{--}) precedes an error on the
        same line, the reported column is the file's.
        """
        line = f"  <!--{comment}--><x>{body}</y>"
        text = f"<ossec_config>\n{line}\n</ossec_config>\n"
        column = line.index("</y>") + 3
        error = self.assertRaises(ConfigError, parse_cluster_config, text, "f.conf")
        self.assertIn(f"at line 2, column {column}: mismatched tag", str(error))


class FileAccessTests(ConfigFileTestCase):
    """Problems reading the file itself."""

    def test_missing_file(self) -> None:
        """A missing file is a L{ConfigError} naming it."""
        path = os.path.join(self.mktemp(), "ossec.conf")
        error = self.assertRaises(ConfigError, load_cluster_config, path)
        self.assertTrue(str(error).startswith(f"{path}: cannot read"), str(error))

    def test_folder_instead_of_file(self) -> None:
        """A folder is not a configuration file."""
        folder = os.path.dirname(self.write(""))
        error = self.assertRaises(ConfigError, load_cluster_config, folder)
        self.assertTrue(str(error).startswith(f"{folder}: cannot read"), str(error))

    def test_not_utf8(self) -> None:
        """Bytes that are not UTF-8 are reported with their line."""
        path = self.write("")
        with open(path, "wb") as f:
            f.write(b"<ossec_config>\n<!-- caf\xe9 -->\n</ossec_config>\n")
        error = self.assertRaises(ConfigError, load_cluster_config, path)
        self.assertEqual(
            str(error),
            f"{path}:2: the configuration file is not UTF-8 text; save it as UTF-8",
        )


class DisabledTests(ConfigFileTestCase):
    """C{<disabled>}: the switch that decides whether anything else is checked."""

    def test_disabled_skips_validation(self) -> None:
        """A disabled cluster loads however wrong the other options are."""
        config, _, _ = self.load(
            cluster_conf(
                disabled="yes",
                name=None,
                key="short",
                node_type="backup",
                port="abc",
                bind_addr="nowhere",
                nodes=["localhost"],
                hidden="maybe",
                ca_cert="ca.pem",
            )
        )
        self.assertTrue(config.disabled)
        self.assertEqual((config.port, config.name, config.key), (1516, "wazuh", "short"))

    def test_disabled_any_case(self) -> None:
        """C{YES} and C{No} are read like yes and no."""
        config, _, _ = self.load(cluster_conf(disabled="YES", key=""))
        self.assertTrue(config.disabled)
        config, _, _ = self.load(cluster_conf(disabled="No"))
        self.assertFalse(config.disabled)

    def test_missing_disabled_means_enabled(self) -> None:
        """Without C{<disabled>} the cluster is enabled, and so validated."""
        config, _, _ = self.load(cluster_conf(disabled=None))
        self.assertFalse(config.disabled)
        self.assertConfigError(cluster_conf(disabled=None, key="short"), "<key>")

    def test_disabled_invalid(self) -> None:
        """Anything but yes or no is an error naming C{<disabled>} and the value."""
        text = cluster_conf(disabled="maybe")
        self.assertConfigError(
            text, "<disabled> is 'maybe'", "yes or no", line=line_of(text, "<disabled>")
        )


class IdentityTests(ConfigFileTestCase):
    """C{<name>}, C{<node_name>}, C{<key>} and C{<node_type>}."""

    def test_name_missing(self) -> None:
        """C{<name>} is required."""
        self.assertConfigError(cluster_conf(name=None), "<cluster> has no <name>", line=2)

    def test_name_empty(self) -> None:
        """C{<name>} must not be empty."""
        text = cluster_conf(name="  ")
        self.assertConfigError(text, "<name> is empty", line=line_of(text, "<name>"))

    def test_name_characters(self) -> None:
        """A cluster name with a space is refused, as Wazuh refuses it."""
        self.assertConfigError(cluster_conf(name="my cluster"), "<name> 'my cluster'", "' '")

    def test_node_name_missing(self) -> None:
        """C{<node_name>} is required."""
        self.assertConfigError(cluster_conf(node_name=None), "<cluster> has no <node_name>")

    def test_node_name_empty(self) -> None:
        """C{<node_name>} must not be empty."""
        self.assertConfigError(cluster_conf(node_name=""), "<node_name> is empty")

    def test_node_name_length(self) -> None:
        """Sixty-four characters are allowed, sixty-five are not."""
        config, _, _ = self.load(cluster_conf(node_name="n" * 64))
        self.assertEqual(config.node_name, "n" * 64)
        self.assertConfigError(
            cluster_conf(node_name="n" * 65), "<node_name> is 65 characters long", "at most 64"
        )

    def test_node_name_allowed_characters(self) -> None:
        """Letters, digits, C{-}, C{_} and C{.} are allowed."""
        config, _, _ = self.load(cluster_conf(node_name="Worker_01.dc-2"))
        self.assertEqual(config.node_name, "Worker_01.dc-2")

    def test_node_name_bad_characters(self) -> None:
        """Slashes, spaces and other characters are refused, naming the element."""
        for bad in ("node/1", "node 1", "nöde", "node:1"):
            text = cluster_conf(node_name=bad)
            self.assertConfigError(
                text, "<node_name>", "only letters, digits", line=line_of(text, "<node_name>")
            )

    def test_node_name_only_dots(self) -> None:
        """C{..} would be a parent folder in file names: refused."""
        self.assertConfigError(cluster_conf(node_name=".."), "<node_name> '..'", "file names")

    def test_key_missing(self) -> None:
        """C{<key>} is required, and the message says how to make one."""
        self.assertConfigError(
            cluster_conf(key=None), "<cluster> has no <key>", "openssl rand -hex 16"
        )

    def test_key_empty(self) -> None:
        """An empty key is refused, with how to make one."""
        text = cluster_conf(key="")
        self.assertConfigError(
            text, "<key> is empty", "openssl rand -hex 16", line=line_of(text, "<key>")
        )

    def test_key_wrong_length(self) -> None:
        """A key of 31 or 33 characters is refused, without printing it."""
        for key in (KEY[:31], KEY + "a"):
            message = self.assertConfigError(
                cluster_conf(key=key),
                "<key> must be exactly 32 letters and digits",
                f"has {len(key)} characters",
                "openssl rand -hex 16",
            )
            self.assertNotIn(key, message)
            self.assertNotIn(KEY[:8], message)

    def test_key_not_alphanumeric(self) -> None:
        """A 32-character key with other characters is refused, without printing it."""
        for key in ("-" + KEY[1:], KEY[:31] + "é", KEY[:31] + "!"):
            message = self.assertConfigError(
                cluster_conf(key=key), "<key>", "neither letters nor digits"
            )
            self.assertNotIn(KEY[1:9], message)

    def test_key_mixed_case(self) -> None:
        """Upper- and lower-case letters and digits make a valid key."""
        key = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcd09"
        config, _, _ = self.load(cluster_conf(key=key))
        self.assertEqual(config.key, key)

    def test_node_type_missing(self) -> None:
        """C{<node_type>} is required: no silent default to master."""
        self.assertConfigError(cluster_conf(node_type=None), "<cluster> has no <node_type>")

    def test_node_type_invalid(self) -> None:
        """An unknown type is refused, saying which value was found."""
        text = cluster_conf(node_type="backup")
        self.assertConfigError(
            text,
            "<node_type> is 'backup'",
            "master or worker",
            line=line_of(text, "<node_type>"),
        )

    def test_node_type_master_and_worker(self) -> None:
        """master and worker (any case) are read as themselves."""
        config, _, _ = self.load(cluster_conf(node_type="Master"))
        self.assertEqual((config.node_type, config.is_master), ("master", True))
        config, _, _ = self.load(cluster_conf(node_type="worker"))
        self.assertEqual((config.node_type, config.is_master), ("worker", False))

    def test_node_type_client(self) -> None:
        """Wazuh's old name C{client} is read as worker, with a warning."""
        config, warnings, path = self.load(cluster_conf(node_type="client"))
        self.assertEqual(config.node_type, "worker")
        self.assertEqual(
            warnings,
            [
                f"<node_type> client in <cluster> of {path} is the old name of worker "
                f"and is read as worker: change it to worker"
            ],
        )


class NetworkTests(ConfigFileTestCase):
    """C{<port>}, C{<bind_addr>}, C{<hidden>}."""

    def test_defaults(self) -> None:
        """Without them: port 1516, all addresses, not hidden."""
        config, _, _ = self.load(cluster_conf(port=None, bind_addr=None, hidden=None))
        self.assertEqual((config.port, config.bind_addr, config.hidden), (1516, "0.0.0.0", False))

    def test_port_bounds(self) -> None:
        """1025 and 65535 are the lowest and highest ports allowed."""
        for port in (1025, 65535):
            config, _, _ = self.load(cluster_conf(port=str(port)))
            self.assertEqual(config.port, port)

    def test_port_invalid(self) -> None:
        """Anything but a whole number from 1025 to 65535 is refused."""
        for port in ("abc", "80", "1024", "70000", "65536", "15.5", "-1516", "+1516", "", "１５１６"):
            text = cluster_conf(port=port)
            self.assertConfigError(
                text,
                f"<port> is {port!r}",
                "from 1025 to 65535",
                line=line_of(text, "<port>"),
            )

    def test_bind_addr(self) -> None:
        """IPv4 and IPv6 addresses are accepted."""
        for address in ("10.0.0.5", "::", "fe80::1"):
            config, _, _ = self.load(cluster_conf(bind_addr=address))
            self.assertEqual(config.bind_addr, address)

    def test_bind_addr_invalid(self) -> None:
        """A host name or a malformed address is refused."""
        for address in ("localhost", "300.1.1.1", "", "10.0.0.1:1516"):
            text = cluster_conf(bind_addr=address)
            self.assertConfigError(
                text,
                f"<bind_addr> is {address!r}, which is not an IP address",
                line=line_of(text, "<bind_addr>"),
            )

    def test_bind_addr_of_this_machine(self) -> None:
        """
        Asked to (as a starting node does), a master's <bind_addr> must be an
        address of this machine; a worker does not listen on it.
        """
        for address in ("127.0.0.1", "0.0.0.0"):
            config, _ = load_cluster_config(self.write(cluster_conf(bind_addr=address)), local_address_problem)
            self.assertEqual(config.bind_addr, address)
        text = cluster_conf(bind_addr="192.0.2.1")
        path = self.write(text)
        error = self.assertRaises(ConfigError, load_cluster_config, path, local_address_problem)
        self.assertEqual(
            str(error),
            f"{path}:{line_of(text, '<bind_addr>')}: <bind_addr> is '192.0.2.1', which is not an address of this"
            " machine (Cannot assign requested address); put one of its IP addresses, or 0.0.0.0 for all of them",
        )
        config, _ = load_cluster_config(self.write(cluster_conf(bind_addr="192.0.2.1", node_type="worker")),
                                        local_address_problem)
        self.assertEqual(config.bind_addr, "192.0.2.1")

    def test_hidden(self) -> None:
        """C{<hidden>yes</hidden>} hides the node."""
        config, _, _ = self.load(cluster_conf(hidden="yes"))
        self.assertTrue(config.hidden)

    def test_hidden_invalid(self) -> None:
        """C{<hidden>} must be yes or no."""
        text = cluster_conf(hidden="1")
        self.assertConfigError(
            text, "<hidden> is '1'", "yes or no", line=line_of(text, "<hidden>")
        )


class NodesTests(ConfigFileTestCase):
    """C{<nodes>}: where the master is."""

    def test_addresses_accepted(self) -> None:
        """IPs and DNS names are accepted as the master's address."""
        for address in (
            "10.0.0.1",
            "127.0.0.1",
            "2001:db8::1",
            "master",
            "wazuh-master.example.com",
            "wazuh-master.example.com.",
            "wazuh_master",
        ):
            config, warnings, _ = self.load(cluster_conf(nodes=[address]))
            self.assertEqual(config.master_address, address)
            self.assertEqual(warnings, [])

    def test_nodes_missing(self) -> None:
        """C{<nodes>} is required."""
        self.assertConfigError(cluster_conf(nodes=None), "<cluster> has no <nodes>", line=2)

    def test_nodes_without_node(self) -> None:
        """C{<nodes>} must hold a C{<node>}, even if it has text of its own."""
        for inner in ("", "10.0.0.1"):
            text = cluster_conf().replace(
                "<nodes><node>10.0.0.1</node></nodes>", f"<nodes>{inner}</nodes>"
            )
            self.assertConfigError(
                text, "<nodes> lists no <node>", line=line_of(text, "<nodes>")
            )

    def test_node_empty(self) -> None:
        """An empty or blank C{<node>} is refused."""
        for value in ("", "   \n  "):
            text = cluster_conf(nodes=[value])
            self.assertConfigError(
                text, "<node> is empty", "master's IP address or DNS name"
            )

    def test_placeholders(self) -> None:
        """Placeholders are refused, naming them and saying what to put there."""
        for placeholder in ("NODE_IP", "0.0.0.0", "localhost", "127.0.1.1", "LocalHost", "::"):
            text = cluster_conf(nodes=[f" {placeholder} "])
            self.assertConfigError(
                text,
                f"<node> holds the placeholder {placeholder!r}",
                "put the master's IP address or DNS name there",
                line=line_of(text, "<nodes>"),
            )

    def test_placeholder_in_later_entry(self) -> None:
        """Every entry is checked, not only the one used."""
        self.assertConfigError(
            cluster_conf(nodes=["10.0.0.1", "NODE_IP"]), "placeholder 'NODE_IP'"
        )

    def test_not_an_address(self) -> None:
        """Values that are neither an IP nor a DNS name are refused."""
        for value in (
            "master:1516",
            "bad..name",
            "-master",
            "master-",
            "999.1.1.1",
            "10.0.0",
            "http://master",
            "a" * 64 + ".com",
            "[::1]",
        ):
            self.assertConfigError(
                cluster_conf(nodes=[value]),
                f"<node> {value!r} is neither an IP address nor a DNS name"
                if len(value) <= 60
                else "is neither an IP address nor a DNS name",
            )

    def test_several_nodes(self) -> None:
        """
        An old configuration listing every node works: the first is the
        master, with a warning.
        """
        config, warnings, path = self.load(
            cluster_conf(nodes=["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        )
        self.assertEqual(config.master_address, "10.0.0.1")
        self.assertEqual(config.nodes, ("10.0.0.1", "10.0.0.2", "10.0.0.3"))
        self.assertEqual(len(warnings), 1)
        self.assertTrue(
            warnings[0].startswith("only the master node should be listed in <nodes>"),
            warnings[0],
        )
        self.assertIn(path, warnings[0])
        self.assertTrue(warnings[0].endswith("; using the first, 10.0.0.1"), warnings[0])

    def test_other_children_of_nodes(self) -> None:
        """A child of C{<nodes>} that is not C{<node>} is ignored with a warning."""
        text = cluster_conf().replace("</nodes>", "<master>x</master></nodes>")
        config, warnings, _ = self.load(text)
        self.assertEqual(config.nodes, ("10.0.0.1",))
        self.assertEqual(len(warnings), 1)
        self.assertIn("<master> in <nodes>", warnings[0])


class OldAndUnknownOptionsTests(ConfigFileTestCase):
    """Options from older versions and ones this daemon does not know."""

    def test_interval(self) -> None:
        """C{<interval>} (Wazuh 3.2 and older) is ignored with a warning."""
        text = cluster_conf().replace("</cluster>", "  <interval>2m</interval>\n  </cluster>")
        config, warnings, path = self.load(text)
        self.assertFalse(config.disabled)
        self.assertEqual(
            warnings,
            [f"<interval> in <cluster> of {path} is no longer used and is ignored: remove it"],
        )

    def test_old_configuration(self) -> None:
        """A 3.2-style section (interval, every node listed) loads with two warnings."""
        text = cluster_conf(nodes=["10.0.0.1", "10.0.0.2"]).replace(
            "</cluster>", "<interval>2m</interval></cluster>"
        )
        config, warnings, _ = self.load(text)
        self.assertEqual(config.master_address, "10.0.0.1")
        self.assertEqual(len(warnings), 2)
        self.assertTrue(warnings[0].startswith("<interval>"))
        self.assertTrue(warnings[1].startswith("only the master node"))

    def test_unknown_element(self) -> None:
        """An unknown element is a warning naming it and its line, not an error."""
        text = cluster_conf().replace("</cluster>", "<haproxy_helper/></cluster>")
        config, warnings, path = self.load(text)
        self.assertEqual(config.node_name, "node01")
        self.assertEqual(
            warnings,
            [
                f"<haproxy_helper> in <cluster> of {path} (line "
                f"{line_of(text, '<haproxy_helper/>')}) is not a cluster option this "
                f"daemon knows and is ignored: check its spelling or remove it"
            ],
        )


class TLSTests(ConfigFileTestCase):
    """The optional C{<ca_cert>}, C{<node_cert>} and C{<node_key>}."""

    def test_none(self) -> None:
        """Without them, there are no TLS files."""
        config, _, _ = self.load(cluster_conf())
        self.assertEqual((config.ca_cert, config.node_cert, config.node_key), (None, None, None))

    def test_all_three(self) -> None:
        """
        All three are read; relative paths are resolved against the Wazuh
        home folder and absolute ones are kept.
        """
        config, _, _ = self.load(
            cluster_conf(
                ca_cert="etc/cluster/ca.pem",
                node_cert="/etc/ssl/node.pem",
                node_key=" etc/cluster/node.key ",
            )
        )
        self.assertEqual(
            (config.ca_cert, config.node_cert, config.node_key),
            ("etc/cluster/ca.pem", "/etc/ssl/node.pem", "etc/cluster/node.key"),
        )
        home = WazuhHome("/var/ossec")
        self.assertEqual(
            tuple(home.resolve(p) for p in (config.ca_cert, config.node_cert, config.node_key)),
            ("/var/ossec/etc/cluster/ca.pem", "/etc/ssl/node.pem", "/var/ossec/etc/cluster/node.key"),
        )

    def test_one_missing(self) -> None:
        """Two of three is an error naming the missing one."""
        text = cluster_conf(ca_cert="ca.pem", node_cert="node.pem")
        self.assertConfigError(
            text,
            "sets <ca_cert> and <node_cert> but not <node_key>",
            line=line_of(text, "<ca_cert>"),
        )

    def test_two_missing(self) -> None:
        """One of three is an error naming both missing ones."""
        self.assertConfigError(
            cluster_conf(node_key="node.key"), "but not <ca_cert> and <node_cert>"
        )

    def test_empty(self) -> None:
        """An empty TLS element is an error naming it."""
        text = cluster_conf(ca_cert="ca.pem", node_cert="", node_key="node.key")
        self.assertConfigError(text, "<node_cert> is empty", line=line_of(text, "<node_cert>"))


class ClusterConfigTests(SynchronousTestCase):
    """The L{ClusterConfig} value itself."""

    def make(self, **changes: object) -> ClusterConfig:
        """A valid configuration with C{changes}."""
        values: dict[str, object] = {
            "name": "wazuh",
            "node_name": "node01",
            "key": KEY,
            "node_type": "master",
            "nodes": ("10.0.0.1",),
        }
        values.update(changes)
        return ClusterConfig(**values)  # type: ignore[arg-type]

    def test_defaults(self) -> None:
        """The defaults are Wazuh's."""
        config = ClusterConfig(name="wazuh", node_name="n", key=KEY, node_type="worker")
        self.assertEqual(
            (config.port, config.bind_addr, config.nodes, config.hidden, config.disabled),
            (1516, "0.0.0.0", (), False, False),
        )
        self.assertEqual(config.master_address, "")

    def test_master_address(self) -> None:
        """The master's address is the first node."""
        self.assertEqual(self.make(nodes=("m1", "m2")).master_address, "m1")

    def test_is_master(self) -> None:
        """Only a master node says it is one."""
        self.assertTrue(self.make().is_master)
        self.assertFalse(self.make(node_type="worker").is_master)

    def test_key_not_in_repr(self) -> None:
        """Logging the configuration does not leak the key."""
        self.assertNotIn(KEY, repr(self.make()))
        self.assertIn("node01", repr(self.make()))

    def test_nodes_become_a_tuple(self) -> None:
        """A list of nodes is stored as a tuple, so the value stays immutable."""
        self.assertEqual(self.make(nodes=["a", "b"]).nodes, ("a", "b"))

    def test_frozen(self) -> None:
        """The configuration cannot be changed after loading."""
        config = self.make()
        self.assertRaises(attrs.exceptions.FrozenInstanceError, setattr, config, "port", 1)
