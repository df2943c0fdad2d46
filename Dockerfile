# twinhull operator image. Build: docker build -t twinhull:0.1.0 .
# (Not built in this repository's CI: the development machine has no Docker engine.)
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 65532 --create-home --shell /usr/sbin/nologin twinhull
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY policies/tiers.yaml /etc/twinhull/tiers.yaml
USER 65532:65532
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["twinhull"]
CMD ["run", "--policy", "/etc/twinhull/tiers.yaml"]
