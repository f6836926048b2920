"""The remote backend: the VLM's question and frame to an OpenAI-compatible server (vLLM, SGLang, TGI, ...).

The robot keeps only this client; the model lives on a GPU box. The chat is the in-process backend's
(``estimator.user_message``), the frame is resized by ``model.max_image_pixels`` exactly as there and sent
as a PNG (lossless) or JPEG data URL, answers are parsed and combined by the same ``combine_answers``.
The official ``openai`` client does the HTTP (timeouts, retries with backoff).

Decisions worth knowing:

* Every failure (refused connection, timeout, a 4xx or 5xx, an engine that died behind a live API, an
  answer without text) becomes an Estimate without a number whose reason starts with "model failed",
  so nodes publish the reason and the annotator retries the frame on its next run. The backend keeps
  the last failure as ``problem`` (the nodes' /diagnostics turn WARN) until a request succeeds again.
* Samples: one request asks for ``n`` answers; a server that returns fewer (transformers serve ignores
  ``n``) gets the rest as single requests with seeds ``model.seed + i``, and is asked that way from
  then on. One sample is greedy (temperature 0); several use ``model.temperature``.
* ``max_tokens`` is always sent (some servers generate 1024 tokens or more when it is missing).
* Start-up: ``GET /models``. A server that answers but refuses the key or does not serve the model is a
  configuration error (ModelLoadError: the node stops with what to do). A server that cannot be reached
  only warns by default (a robot may boot before its GPU box); ``require_server=True`` (the annotator)
  makes that an error too.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from spatialvlm_ros.spatial.estimator import (
    Estimate,
    Frame,
    ModelConfig,
    ModelLoadError,
    SpatialQuery,
    combine_answers,
    model_image,
    user_message,
)

log = logging.getLogger(__name__)

__all__ = ["RemoteEstimator", "encode_image"]

NO_KEY = "EMPTY"  # what servers without authentication expect in the Authorization header (vLLM's docs)
JPEG_QUALITY = 90


def encode_image(rgb: Any, max_pixels: int, image_format: str = "png") -> str:
    """The frame as a data URL, resized as the in-process model would see it."""
    image = model_image(rgb, max_pixels)
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        mime = "image/jpeg"
    else:
        image.save(buffer, format="PNG")
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


class RemoteEstimator:
    """Answers SpatialQuery text through an OpenAI-compatible /chat/completions endpoint."""

    backend = "remote"
    concurrent = True  # estimate() may run in several threads: requests share one bounded pool

    def __init__(self, config: ModelConfig, require_server: bool = False) -> None:
        try:
            from openai import OpenAI
        except ImportError as exc:
            raise ModelLoadError("model.backend remote needs the openai client: pip install openai "
                                 "(it is in requirements.txt)") from exc
        self.config = config
        self.model_name = config.name_or_path
        self.max_in_flight = config.max_in_flight
        self.base_url = config.base_url.rstrip("/")
        self._extra_body = config.extra_body_dict()
        self._client = OpenAI(base_url=self.base_url, api_key=self._api_key(config),
                              timeout=config.timeout_s, max_retries=config.retries)
        self._pool = ThreadPoolExecutor(max_workers=config.max_in_flight, thread_name_prefix="remote-vlm")
        self._lock = threading.Lock()
        self._problem: str | None = None
        self._failures_in_a_row = 0
        self._n_honoured: bool | None = None  # unknown until a multi-sample answer comes back
        self.requests = 0  # sent, for diagnostics and the bench
        self.client_seconds = 0.0  # CPU time spent encoding frames in this process (the client's own cost)
        problem = self.check_server()
        if problem is not None:
            if require_server:
                raise ModelLoadError(problem)
            log.warning("%s; frames get no number until it answers", problem)

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _api_key(config: ModelConfig) -> str:
        name = config.api_key_env.strip()
        if not name:
            return NO_KEY
        key = os.environ.get(name)
        if not key:
            raise ModelLoadError(f"model.api_key_env names the environment variable {name!r}, but it is "
                                 "not set (or empty) in this process's environment: export it before "
                                 "starting, or set model.api_key_env to '' for a server without a key")
        return key

    def check_server(self) -> str | None:
        """Ask the server which models it serves. Raises ModelLoadError for a configuration error;
        returns why the server cannot be used right now (unreachable, failing), None when all is well."""
        import openai

        try:
            models = self._client.models.list()
            served = [m.id for m in models.data]
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise ModelLoadError(
                f"the model server at {self.base_url} refused the API key ({exc.status_code}): set the "
                "key in the environment variable named by model.api_key_env") from exc
        except openai.NotFoundError as exc:
            raise ModelLoadError(
                f"{self.base_url}/models is not found (404): model.base_url must be the API root of an "
                "OpenAI-compatible server, which usually ends in /v1 (e.g. http://gpu-box:8000/v1)") from exc
        except openai.APIError as exc:
            problem = f"model server check failed: {self._describe(exc)}"
            self._failed(problem)
            return problem
        if self.model_name not in served:
            raise ModelLoadError(
                f"the model server at {self.base_url} does not serve {self.model_name!r}; it serves: "
                f"{', '.join(served) or 'nothing'}. Set model.name_or_path to one of those ids")
        self._succeeded()
        return None

    # ------------------------------------------------------------------ health
    @property
    def problem(self) -> str | None:
        """Why the server cannot answer now (the last failure, until a request succeeds), else None."""
        with self._lock:
            if self._problem is None:
                return None
            return f"{self._problem} ({self._failures_in_a_row} request(s) failed in a row)"

    def _failed(self, reason: str) -> None:
        with self._lock:
            self._problem = reason
            self._failures_in_a_row += 1

    def _succeeded(self) -> None:
        with self._lock:
            if self._problem is not None:
                log.info("the model server at %s answers again", self.base_url)
            self._problem = None
            self._failures_in_a_row = 0

    def _describe(self, exc: BaseException) -> str:
        """What went wrong with one request, in the words a user acts on."""
        import openai

        where = f"the model server at {self.base_url}"
        if isinstance(exc, openai.APITimeoutError):
            return f"{where} did not answer within {self.config.timeout_s:g} s (model.timeout_s)"
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return f"cannot reach {where} ({type(cause).__name__}: {cause}); is it running?"
        if isinstance(exc, openai.APIStatusError):
            detail = _status_detail(exc)
            if exc.status_code == 503:
                return f"{where} is unavailable (503: {detail}); its engine may be down or still loading"
            if exc.status_code == 404:
                return f"{where} answered 404 ({detail}): does it serve {self.model_name!r}?"
            kind = "rejected the request" if exc.status_code < 500 else "failed"
            return f"{where} {kind} ({exc.status_code}: {detail})"
        return f"{where}: {type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ requests
    def _request(self, image_url: str, question: str, n: int, seed: int, sampled: bool) -> list[str]:
        """One chat completion; its answers' texts. Raises the client's errors."""
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": user_message(question, {"type": "image_url", "image_url": {"url": image_url}}),
            "max_tokens": self.config.max_new_tokens,
            "temperature": self.config.temperature if sampled else 0.0,
            "seed": seed,
        }
        if n > 1:
            body["n"] = n
        response = self._client.chat.completions.create(**body, extra_body=self._extra_body or None)
        with self._lock:
            self.requests += 1
        texts = [(choice.message.content or "").strip() for choice in (response.choices or [])]
        if not texts:
            raise _EmptyAnswer("the server's answer had no choices")
        return texts

    def _submit(self, image_url: str, question: str, n: int, seed: int, sampled: bool) -> Future:
        return self._pool.submit(self._request, image_url, question, n, seed, sampled)

    def estimate(self, items: Sequence[tuple[Frame, SpatialQuery]], samples: int = 1) -> list[Estimate]:
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        started = time.thread_time()
        urls: dict[int, str] = {}
        for frame, _ in items:  # several questions on one frame share one encoding
            if id(frame) not in urls:
                urls[id(frame)] = encode_image(frame.rgb, self.config.max_image_pixels,
                                               self.config.image_format)
        with self._lock:
            self.client_seconds += time.thread_time() - started
        sampled = samples > 1
        seed = self.config.seed
        per_seed = sampled and self._n_honoured is False
        # Every request is submitted from this thread (never from a pool thread), so a full pool
        # cannot deadlock; the pool bounds the requests in flight across all callers.
        first: list[list[Future]] = []
        for frame, query in items:
            url = urls[id(frame)]
            if per_seed:
                first.append([self._submit(url, query.text, 1, seed + i, True) for i in range(samples)])
            else:
                first.append([self._submit(url, query.text, samples, seed, sampled)])
        answers: list[list[str] | str] = []
        for futures in first:
            answers.append(self._collect(futures))
        if sampled and not per_seed:
            short = [i for i, a in enumerate(answers) if isinstance(a, list) and len(a) < samples]
            honoured = [i for i, a in enumerate(answers) if isinstance(a, list) and len(a) >= samples]
            if short or honoured:
                self._n_honoured = not short
            more = {i: [self._submit(urls[id(items[i][0])], items[i][1].text, 1, seed + j, True)
                        for j in range(len(answers[i]), samples)] for i in short}
            for i, futures in more.items():
                extra = self._collect(futures)
                answers[i] = extra if isinstance(extra, str) else [*answers[i], *extra]
        results: list[Estimate] = []
        for (_, query), got in zip(items, answers, strict=True):
            if isinstance(got, str):
                results.append(Estimate(query, None, reason=f"model failed: {got}"))
            else:
                results.append(combine_answers(query, got[:samples]))
        return results

    def _collect(self, futures: list[Future]) -> list[str] | str:
        """The answers of ``futures`` together, or the reason (a str) when any request failed."""
        import openai

        texts: list[str] = []
        reason: str | None = None
        for future in futures:
            try:
                texts.extend(future.result())
            except (openai.APIError, _EmptyAnswer) as exc:
                reason = reason or self._describe(exc)
            except Exception as exc:  # noqa: BLE001 - an answer the client cannot read is a failed frame
                reason = reason or f"the model server's answer could not be read: {type(exc).__name__}: {exc}"
        if reason is not None:
            self._failed(reason)
            return reason
        self._succeeded()
        return texts

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


class _EmptyAnswer(RuntimeError):
    """A 200 answer with no choices."""


def _status_detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message") or body.get("error") or body
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        return str(detail)[:200]
    return str(getattr(exc, "message", exc))[:200]
