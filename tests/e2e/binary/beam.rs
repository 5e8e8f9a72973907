//! The Beam integration (integrations/beam) end to end: real pipelines on Beam's local
//! runner with `RuninferModelHandler` driving this build's `runinfer serve`
//! (tests/python/beam_pipeline.py, in a venv that scripts/python-env.sh installs from
//! PyPI).

use super::run_python_job;

#[test]
fn beam_pipelines_with_the_runinfer_model_handler() {
    // The named-input pipeline's model, examples and onnxruntime's outputs.
    let files = crate::multi_input::example_files();
    run_python_job(
        "requirements-beam.txt",
        "py-beam",
        "beam_pipeline.py",
        &[
            files.model.as_os_str(),
            files.examples.as_os_str(),
            files.reference.as_os_str(),
        ],
    );
}
