# twinhull operator image, for users with a Docker engine (or another OCI builder) and an image
# registry: docker build -t registry.example.com/twinhull:0.2.0 . && docker push ...
# Not how the image is built here: this repository's machines have no Docker engine and no
# registry, so image/build.sh builds it with buildah from image/Containerfile, on a Debian
# bookworm base made by debootstrap from the apt mirror, with the Python dependencies pinned
# to the versions the tests ran with (see image/build.sh --help). That build is the one that is
# run and checked here. This file is not built here; it gives the same user (65532), entrypoint
# (twinhull) and policy path (/etc/twinhull/tiers.yaml), but pip resolves the dependencies
# within pyproject.toml's ranges when it is built, so versions may differ from the tested ones.
#
# The base is pinned by digest: the OCI index (all platforms) of python:3.11-slim-bookworm as
# published by the Docker Official Images (Python 3.11.16, Debian bookworm, built 2026-08-25),
# as recorded in docker-library/repo-info, repos/python/remote/3.11-slim-bookworm.md (commit
# 33a22f41ac7bf613bc03380b0317536a9a7fb5e8). It could not be pulled from here to check it:
# whoever has registry access should confirm it (docker buildx imagetools inspect
# python:3.11-slim-bookworm) and move both FROM lines to a newer digest together.
FROM python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b
RUN useradd --uid 65532 --create-home --shell /usr/sbin/nologin twinhull
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY policies/tiers.yaml /etc/twinhull/tiers.yaml
USER 65532:65532
# glibc gives threads that allocate their own malloc arenas (up to 8 per core); the
# operator runs a dozen client threads per cluster. Capped at 2, the scale benchmark's
# peak RSS at 500 ModelDeployments was 231 MiB against 266 (one run each; see README)
ENV PYTHONUNBUFFERED=1 MALLOC_ARENA_MAX=2
ENTRYPOINT ["twinhull"]
CMD ["run", "--policy", "/etc/twinhull/tiers.yaml"]
