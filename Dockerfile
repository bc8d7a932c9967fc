# The boxoffice node image: built with the same steps as a machine
# (deploy/prereqs.sh, the release build, deploy/package.sh), run from a slim
# Debian as a non-root user.
#
#   docker build -t boxoffice .
#   docker build --target debuginfo -o type=local,dest=debug .   # boxoffice.debug, for profiling
#
# The binary in the image is stripped (tens of MB); its debug information is the
# debuginfo stage's boxoffice.debug, which gdb and perf find beside the binary.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
ENV CARGO_TARGET_DIR=/src/target
RUN bash deploy/prereqs.sh
RUN cargo build --release --locked --workspace --bins
RUN bash deploy/package.sh /out /src/target/release/boxoffice

FROM scratch AS debuginfo
COPY --from=build /out/boxoffice.debug /boxoffice.debug

FROM debian:bookworm-slim
# curl: the bootstrap job (deploy/k8s/init-job.yaml) and health checks by hand.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/boxoffice boxoffice \
 && install -d -o boxoffice -g boxoffice -m 0700 /var/lib/boxoffice
COPY --from=build /out/boxoffice /usr/local/bin/boxoffice
USER 10001:10001
WORKDIR /var/lib/boxoffice
EXPOSE 7100 7200
ENTRYPOINT ["boxoffice"]
CMD ["node", "--config", "/etc/boxoffice/node.toml"]
