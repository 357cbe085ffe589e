"""
Sealing: keys, proofs, and what an opener accepts.
"""

from __future__ import annotations

import os

from hypothesis import given, settings, strategies as st
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.protocol.sealed import MAX_KEYS_PER_BOX, ProtocolViolation, decodeBox
from wazuhcluster.protocol.sealing import (
    SEAL_OVERHEAD,
    SealingError,
    keyProof,
    rootKey,
    sealersFor,
)

KEY = "c98b62a9b6169ac5f67dae55ae4a9088"


def pair(key: str = KEY, binding: bytes = b"binding"):
    root = rootKey(key)
    nonces = (b"w" * 32, b"m" * 32)
    return sealersFor("worker", root, *nonces, binding), sealersFor("master", root, *nonces, binding)


class SealingTests(SynchronousTestCase):
    def test_roundTripBothWays(self) -> None:
        (workerOut, workerIn), (masterOut, masterIn) = pair()
        for n in range(3):
            self.assertEqual(masterIn.open(workerOut.seal(b"to master %d" % n)), b"to master %d" % n)
            self.assertEqual(workerIn.open(masterOut.seal(b"to worker %d" % n)), b"to worker %d" % n)

    def test_overhead(self) -> None:
        (workerOut, _), _ = pair()
        self.assertEqual(len(workerOut.seal(b"x" * 100)), 100 + SEAL_OVERHEAD)

    def test_ciphertextHidesPlaintext(self) -> None:
        (workerOut, _), _ = pair()
        self.assertNotIn(b"KeepAlive", workerOut.seal(b"_command KeepAlive"))

    def test_sameTextSealsDifferently(self) -> None:
        (workerOut, _), _ = pair()
        self.assertNotEqual(workerOut.seal(b"same")[8:], workerOut.seal(b"same")[8:])

    def test_otherClusterKey(self) -> None:
        (workerOut, _), _ = pair()
        (_, _), (_, strangerIn) = pair(key="0123456789abcdef0123456789abcdef")
        with self.assertRaises(SealingError) as e:
            strangerIn.open(workerOut.seal(b"hello"))
        self.assertIn("another cluster key", str(e.exception))

    def test_otherConnection(self) -> None:
        """A message from one connection means nothing on another (other binding)."""
        (workerOut, _), _ = pair(binding=b"session one")
        _, (_, otherIn) = pair(binding=b"session two")
        self.assertRaises(SealingError, otherIn.open, workerOut.seal(b"hello"))

    def test_reflectedMessage(self) -> None:
        """A worker's message sent back to the worker is not accepted."""
        (workerOut, workerIn), _ = pair()
        self.assertRaises(SealingError, workerIn.open, workerOut.seal(b"hello"))

    def test_replayAndReorder(self) -> None:
        (workerOut, _), (_, masterIn) = pair()
        first, second = workerOut.seal(b"1"), workerOut.seal(b"2")
        self.assertRaises(SealingError, masterIn.open, second)
        masterIn.open(first)
        self.assertRaises(SealingError, masterIn.open, first)
        self.assertEqual(masterIn.open(second), b"2")

    def test_rewrittenSequenceNumber(self) -> None:
        """Changing the clear sequence number breaks authentication."""
        (workerOut, _), (_, masterIn) = pair()
        workerOut.seal(b"skipped")
        sealed = workerOut.seal(b"second")
        forged = (0).to_bytes(8, "big") + sealed[8:]
        with self.assertRaises(SealingError) as e:
            masterIn.open(forged)
        self.assertIn("failed authentication", str(e.exception))

    def test_truncated(self) -> None:
        _, (_, masterIn) = pair()
        self.assertRaises(SealingError, masterIn.open, b"short")

    @given(st.binary(max_size=200))
    @settings(max_examples=200, deadline=None)
    def test_garbageOnlyRaisesSealingError(self, data: bytes) -> None:
        _, (_, masterIn) = pair()
        self.assertRaises(SealingError, masterIn.open, data)

    def test_proofsDependOnRoleKeyAndTranscript(self) -> None:
        root = rootKey(KEY)
        proof = keyProof(root, b"worker", b"t")
        self.assertNotEqual(proof, keyProof(root, b"master", b"t"))
        self.assertNotEqual(proof, keyProof(root, b"worker", b"u"))
        self.assertNotEqual(proof, keyProof(rootKey("0" * 32), b"worker", b"t"))
        self.assertEqual(proof, keyProof(rootKey(KEY), b"worker", b"t"))

    def test_rootKeyIsNotTheClusterKey(self) -> None:
        self.assertNotIn(KEY.encode(), rootKey(KEY))
        self.assertEqual(len(rootKey(KEY)), 32)


class DecodeBoxTests(SynchronousTestCase):
    """The strict decoder of a sealed box's contents."""

    def test_roundTrip(self) -> None:
        box = amp.AmpBox({b"_command": b"KeepAlive", b"_ask": b"7", b"x": os.urandom(300)})
        self.assertEqual(decodeBox(box.serialize()), box)

    def test_trailingBytes(self) -> None:
        data = amp.AmpBox({b"a": b"b"}).serialize()
        self.assertRaises(ProtocolViolation, decodeBox, data + b"\x00")

    def test_truncated(self) -> None:
        data = amp.AmpBox({b"a": b"bcdef"}).serialize()
        for end in range(len(data)):
            self.assertRaises(ProtocolViolation, decodeBox, data[:end])

    def test_duplicateKey(self) -> None:
        one = amp.AmpBox({b"a": b"1"}).serialize()[:-2]
        self.assertRaises(ProtocolViolation, decodeBox, one + one + b"\x00\x00")

    def test_tooManyKeys(self) -> None:
        box = amp.AmpBox({b"k%d" % i: b"" for i in range(MAX_KEYS_PER_BOX + 1)})
        self.assertRaises(ProtocolViolation, decodeBox, box.serialize())

    @given(st.binary(max_size=300))
    @settings(max_examples=300, deadline=None)
    def test_anyBytesDecodeOrRaiseProtocolViolation(self, data: bytes) -> None:
        try:
            box = decodeBox(data)
        except ProtocolViolation:
            return
        self.assertEqual(decodeBox(box.serialize()), box)
