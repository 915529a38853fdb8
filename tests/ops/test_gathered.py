"""
Tests for L{twisted_s3sftp.ops.gathered}: a worker's answer to its parent
is taken only whole.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.ops.gathered import _Answer


class AnswerTests(SynchronousTestCase):
    """
    L{_Answer}, the parent's HTTP/1.0 request to a worker.
    """

    def answer(self, data: bytes, reason: Failure) -> _Answer:
        """
        @return: an answer that sent its request, received C{data}, and
            lost its connection for C{reason}.
        """
        answer = _Answer("/metrics")
        transport = StringTransport()
        answer.makeConnection(transport)
        self.assertEqual(transport.value(), b"GET /metrics HTTP/1.0\r\nHost: worker\r\n\r\n")
        answer.dataReceived(data)
        answer.connectionLost(reason)
        return answer

    def test_whole(self) -> None:
        """
        An answer ended by the worker's close gives its status and body.
        """
        answer = self.answer(b"HTTP/1.0 200 OK\r\nA: b\r\n\r\nbody\n", Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(answer.done), (200, "body\n"))

    def test_cutShort(self) -> None:
        """
        An answer cut short (the timeout aborted it) is an error, not a
        partial page.
        """
        answer = self.answer(b"HTTP/1.0 200 OK\r\n\r\nbo", Failure(ConnectionAborted()))
        self.failureResultOf(answer.done, ValueError)

    def test_notHTTP(self) -> None:
        """
        Something that is not an HTTP answer is an error.
        """
        answer = self.answer(b"garbage", Failure(ConnectionDone()))
        self.failureResultOf(answer.done, ValueError)
