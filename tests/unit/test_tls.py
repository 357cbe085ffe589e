"""
TLS material: the node's own certificate, configured CA certificates, and
the identity check of the master's certificate in CA mode.
"""

from __future__ import annotations

import os
import stat

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support.certs import Authority, writePEM
from tests.support.memorynet import MasterHarness, MemoryNetwork, settings
from wazuhcluster.config import ClusterConfig, ConfigError
from wazuhcluster.home import WazuhHome
from wazuhcluster.worker.connection import HandshakeFailed
from wazuhcluster.tls import (
    PeerIdentityError,
    checkPeerIdentity,
    ensureNodeCertificate,
    loadTLSMaterial,
)


def config(**tls: str) -> ClusterConfig:
    return ClusterConfig(
        name="wazuh", node_name="node02", key="k" * 32, node_type="worker", nodes=("10.0.0.1",), **tls
    )


class NodeCertificateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = WazuhHome(os.path.abspath(self.mktemp()))
        self.home.makeFolders()

    def test_madeOnFirstStartWithModes(self) -> None:
        material = ensureNodeCertificate(self.home, "node02")
        self.assertEqual(stat.S_IMODE(os.stat(self.home.nodeKey).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.home.nodeCert).st_mode), 0o640)
        self.assertIsNone(material.authority)
        self.assertFalse(material.verifiesPeers)

    def test_reusedAfterwards(self) -> None:
        first = ensureNodeCertificate(self.home, "node02")
        second = ensureNodeCertificate(self.home, "node02")
        self.assertEqual(first.certificate, second.certificate)

    def test_noTemporaryFilesLeft(self) -> None:
        ensureNodeCertificate(self.home, "node02")
        self.assertEqual(
            sorted(os.listdir(self.home.path("etc"))), ["cluster-node.crt", "cluster-node.key"]
        )


class ConfiguredCertificateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = WazuhHome(os.path.abspath(self.mktemp()))
        self.home.makeFolders()
        self.ca = Authority()
        self.material = self.ca.issue("node02", dnsNames=("node02",))
        writePEM(self.material, self.home.path("etc", "node.key"), self.home.path("etc", "node.pem"),
                 self.home.path("etc", "ca.pem"))
        self.config = config(ca_cert="etc/ca.pem", node_cert="etc/node.pem", node_key="etc/node.key")

    def test_loadedRelativeToHome(self) -> None:
        loaded = loadTLSMaterial(self.home, self.config, "ossec.conf")
        self.assertEqual(loaded.certificate, self.material.certificate)
        self.assertEqual(loaded.authority, self.ca.certificate)
        self.assertTrue(loaded.verifiesPeers)
        self.assertFalse(os.path.exists(self.home.nodeKey))

    def test_missingFile(self) -> None:
        os.unlink(self.home.path("etc", "ca.pem"))
        with self.assertRaises(ConfigError) as e:
            loadTLSMaterial(self.home, self.config, "ossec.conf")
        self.assertIn("<ca_cert>", str(e.exception))
        self.assertIn("ca.pem", str(e.exception))

    def test_keyDoesNotMatchCertificate(self) -> None:
        other = self.ca.issue("node03", dnsNames=("node03",))
        writePEM(other, self.home.path("etc", "other.key"), self.home.path("etc", "other.pem"))
        with self.assertRaises(ConfigError) as e:
            loadTLSMaterial(
                self.home,
                config(ca_cert="etc/ca.pem", node_cert="etc/node.pem", node_key="etc/other.key"),
                "ossec.conf",
            )
        self.assertIn("does not match the private key", str(e.exception))

    def test_notPEM(self) -> None:
        with open(self.home.path("etc", "node.pem"), "w") as f:
            f.write("not a certificate\n")
        with self.assertRaises(ConfigError) as e:
            loadTLSMaterial(self.home, self.config, "ossec.conf")
        self.assertIn("<node_cert>", str(e.exception))


class PeerIdentityTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ca = Authority()

    def test_dnsName(self) -> None:
        checkPeerIdentity(self.ca.issue("m", dnsNames=("master.example",)).certificate, "master.example")
        self.assertRaises(
            PeerIdentityError,
            checkPeerIdentity,
            self.ca.issue("m", dnsNames=("master.example",)).certificate,
            "other.example",
        )

    def test_ipAddress(self) -> None:
        cert = self.ca.issue("m", ips=("10.0.0.1",)).certificate
        checkPeerIdentity(cert, "10.0.0.1")
        self.assertRaises(PeerIdentityError, checkPeerIdentity, cert, "10.0.0.2")

    def test_noSubjectAltNameNamesNothing(self) -> None:
        """
        A certificate without subjectAltName matches no address, even the one
        in its common name (the pitfall where it matched any).
        """
        cert = self.ca.issue("10.0.0.1").certificate
        with self.assertRaises(PeerIdentityError) as e:
            checkPeerIdentity(cert, "10.0.0.1")
        self.assertEqual(
            str(e.exception),
            "the master's certificate does not name 10.0.0.1 in its subjectAltName (it has no subjectAltName)",
        )

    def test_mismatchSaysWhatTheCertificateNames(self) -> None:
        """The error names what the certificate does name, in words, not service-identity's exception repr."""
        cert = self.ca.issue("m", dnsNames=("master.example",), ips=("10.0.0.1",)).certificate
        for address in ("10.0.0.2", "other.example"):
            with self.assertRaises(PeerIdentityError) as e:
                checkPeerIdentity(cert, address)
            self.assertEqual(
                str(e.exception),
                f"the master's certificate does not name {address} in its subjectAltName"
                " (it names master.example, 10.0.0.1)",
            )


class MutualTLSTests(SynchronousTestCase):
    """CA mode end to end, over in-memory TLS."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.net = MemoryNetwork(self.clock)
        self.ca = Authority()

    def join(self, masterTLS, workerTLS, masterAddress: str = "10.0.0.1"):
        master = MasterHarness(self.clock, tls=masterTLS)
        _, joined = self.net.joinWorker(master, settings("node02", tls=workerTLS, masterAddress=masterAddress))
        return master, joined

    def test_signedCertificatesJoin(self) -> None:
        master, joined = self.join(
            self.ca.issue("master-node", ips=("10.0.0.1",)), self.ca.issue("node02", dnsNames=("node02",))
        )
        self.successResultOf(joined)
        self.assertIn("node02", master.fleet.workers)

    def test_masterCertificateForAnotherAddress(self) -> None:
        master, joined = self.join(
            self.ca.issue("master-node", ips=("10.0.0.9",)), self.ca.issue("node02", dnsNames=("node02",))
        )
        failure = self.failureResultOf(joined, HandshakeFailed)
        self.assertIn("does not name 10.0.0.1", failure.getErrorMessage())
        self.assertEqual(master.fleet.workers, {})

    def test_masterCertificateWithoutSubjectAltName(self) -> None:
        master, joined = self.join(
            self.ca.issue("10.0.0.1"), self.ca.issue("node02", dnsNames=("node02",))
        )
        self.failureResultOf(joined, HandshakeFailed)
        self.assertEqual(master.fleet.workers, {})

    def test_workerSignedByAnotherAuthority(self) -> None:
        """The master refuses a client certificate its CA did not sign: TLS fails."""
        stranger = Authority("another CA")
        workerTLS = stranger.issue("node02", dnsNames=("node02",))
        workerTLS = type(workerTLS)(workerTLS.privateKey, workerTLS.certificate, self.ca.certificate)
        master, joined = self.join(self.ca.issue("master-node", ips=("10.0.0.1",)), workerTLS)
        self.assertEqual(master.fleet.workers, {})
        failure = self.failureResultOf(joined)
        self.assertFalse(failure.check(HandshakeFailed), "TLS itself must refuse it")

    def test_masterSignedByAnotherAuthority(self) -> None:
        """A worker refuses a master its CA did not sign: TLS fails, no key proof is sent."""
        stranger = Authority("another CA")
        masterTLS = stranger.issue("master-node", ips=("10.0.0.1",))
        masterTLS = type(masterTLS)(masterTLS.privateKey, masterTLS.certificate, self.ca.certificate)
        master, joined = self.join(masterTLS, self.ca.issue("node02", dnsNames=("node02",)))
        self.failureResultOf(joined)
        self.assertEqual(master.fleet.workers, {})
