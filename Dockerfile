# runinfer in a container: `runinfer serve` on 0.0.0.0:8080 (KServe's HTTP port) and
# gRPC on 8081 (KServe's gRPC port),
# the bundled plugins baked in and compiled ahead into the image's compile cache.
#   docker build -t runinfer .
#   docker run -p 8080:8080 runinfer
#   docker run -p 8080:8080 -v $PWD/my-plugins:/mnt/models runinfer serve --address 0.0.0.0 --port 8080 --plugins /mnt/models
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# rust-toolchain.toml brings the wasm32-wasip2 target; host/build.rs builds plugins/.
RUN cargo build --release -p runinfer-cli \
 && mkdir -p /out/plugins \
 && for d in plugins/*/; do \
      [ -f "$d/plugin.toml" ] || continue; \
      name=$(basename "$d"); mkdir -p "/out/plugins/$name"; \
      cp "$d/plugin.toml" "$d"/*.wasm "/out/plugins/$name/"; \
      if [ -d "$d/models" ]; then cp -r "$d/models" "/out/plugins/$name/"; fi; \
    done

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 runinfer \
 && mkdir -p /var/cache/runinfer && chown runinfer /var/cache/runinfer
COPY --from=build /src/target/release/runinfer /usr/local/bin/runinfer
COPY --from=build /out/plugins /opt/runinfer/plugins
USER runinfer
ENV RUNINFER_CACHE_DIR=/var/cache/runinfer RUNINFER_PLUGINS=/opt/runinfer/plugins
# Compile the bundled components now, so a container starts from the cache.
RUN runinfer list
EXPOSE 8080 8081
ENTRYPOINT ["runinfer"]
CMD ["serve", "--address", "0.0.0.0", "--port", "8080", "--grpc-port", "8081"]
