# A bundle as an image of its own, so that a new model ships without rebuilding the runtime image.
# The RayCluster's head copies it into its /bundle with an init container (bundles are megabytes:
# more than a ConfigMap holds). The head checks the bundle hash when it loads it and hands the files
# to the workers through Ray.
#   docker build -f deploy/bundle.Dockerfile --build-arg BUNDLE=bundles/fashion-mnist \
#     -t agilenn-bundle:fashion-mnist .
ARG BUSYBOX_IMAGE=busybox:1.37
FROM ${BUSYBOX_IMAGE}
ARG BUNDLE=bundles/fashion-mnist
COPY ${BUNDLE}/ /bundle/
USER 1000:1000
CMD ["cp", "-R", "/bundle/.", "/mnt/bundle/"]
