//! Write runinfer model handlers in Rust.
//!
//! A handler is a type that implements [`ModelHandler`] (Apache Beam's `ModelHandler`:
//! `signature`, `load_model` and `run_inference` are required) and is exported with
//! [`export_handler!`]. `cargo build --target wasm32-wasip2 --release` then yields a
//! WebAssembly component that the runinfer host can load from a plugin directory.
//!
//! ```ignore
//! use runinfer_sdk::*;
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! impl ModelHandler for Echo {
//!     fn signature(&self) -> Signature {
//!         Signature { inputs: ValueKind::Json, outputs: ValueKind::Json }
//!     }
//!     fn load_model(&mut self) -> Result<(), Error> { Ok(()) }
//!     fn run_inference(&mut self, batch: Vec<Value>, _args: &Args) -> Result<Vec<Value>, Error> {
//!         Ok(batch)
//!     }
//! }
//!
//! export_handler!(Echo);
//! ```
//!
//! Tensors live in host memory: [`Tensor::stack`] assembles a batch and [`Model::run`]
//! runs a model without the data ever being copied into the guest, unless the handler
//! reads it with [`Tensor::to_f32`] or [`Tensor::data`].
#![deny(missing_docs)]

/// Bindings generated from the WIT contract in `wit/`.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "handler",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "runinfer_sdk::bindings",
    });
}

pub use bindings::exports::runinfer::handler::handler_api::{Batching, HandlerInfo, ResourceHints};
pub use bindings::runinfer::handler::inference::{Model, TensorInfo};
pub use bindings::runinfer::handler::log::Level;
pub use bindings::runinfer::handler::types::{
    Dtype, Error, ErrorCode, Field, FieldKind, FieldSpec, Signature, Tensor, TensorSpec, Value,
    ValueKind,
};

/// Arguments as `(name, value)` pairs: the `[args]` of `plugin.toml` for
/// [`ModelHandler::configure`], or a request's inference args for
/// [`ModelHandler::run_inference`].
pub type Args = [(String, String)];

/// Looks up an argument by name.
pub fn arg<'a>(args: &'a Args, name: &str) -> Option<&'a str> {
    args.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// A model handler: Apache Beam's `ModelHandler` as a WebAssembly component.
///
/// One value of the type lives in each handler instance. [`signature`], [`load_model`]
/// and [`run_inference`] are required; everything else has Beam's defaults.
///
/// [`signature`]: ModelHandler::signature
///
/// [`load_model`]: ModelHandler::load_model
/// [`run_inference`]: ModelHandler::run_inference
pub trait ModelHandler: Default + 'static {
    /// The handler's constructor arguments: the `[args]` table of `plugin.toml`.
    fn configure(&mut self, args: &Args) -> Result<(), Error> {
        let _ = args;
        Ok(())
    }

    /// The typed signature: what each example is (the host decodes it before
    /// [`run_inference`] sees it) and what each inference is (the host checks every
    /// one and dead-letters a batch that does not match). Asked after every
    /// [`load_model`], so a generic handler can derive it from its model.
    ///
    /// [`run_inference`]: ModelHandler::run_inference
    /// [`load_model`]: ModelHandler::load_model
    fn signature(&self) -> Signature;

    /// Beam's `get_metrics_namespace`; `None` uses the plugin name.
    fn metrics_namespace(&self) -> Option<String> {
        None
    }

    /// Beam's `batch_elements_kwargs`; unset fields keep the host defaults.
    fn batch_elements_kwargs(&self) -> Batching {
        Batching {
            min_batch_size: None,
            max_batch_size: None,
            max_batch_duration_ms: None,
        }
    }

    /// Beam's `get_resource_hints`: the host refuses to start an instance that
    /// cannot meet them (`min_ram_mb` above the plugin's `[limits] memory_mb`, any
    /// accelerator on a CPU host).
    fn resource_hints(&self) -> ResourceHints {
        ResourceHints {
            min_ram_mb: None,
            accelerator: None,
        }
    }

    /// Beam's `load_model`: open models (by the names `plugin.toml` grants) and keep
    /// them in `self`.
    fn load_model(&mut self) -> Result<(), Error>;

    /// Beam's `update_model_path`: the model granted as `model` now refers to the file
    /// `path`. [`load_model`] is called right after, so most handlers keep the default.
    ///
    /// [`load_model`]: ModelHandler::load_model
    fn update_model_path(&mut self, model: &str, path: Option<&str>) -> Result<(), Error> {
        let _ = (model, path);
        Ok(())
    }

    /// Beam's `run_inference`: exactly one inference for each example, in order.
    fn run_inference(&mut self, batch: Vec<Value>, args: &Args) -> Result<Vec<Value>, Error>;
}

impl Error {
    /// A new error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }

    /// The example or an argument is malformed.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }

    /// The model failed.
    pub fn model(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Model, message)
    }

    /// An unexpected state.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl Value {
    /// The tensor inside, or an `invalid-input` error naming what was found instead.
    pub fn into_tensor(self) -> Result<Tensor, Error> {
        match self {
            Value::Tensor(tensor) => Ok(tensor),
            other => Err(Error::invalid_input(format!(
                "expected a tensor example, got {}",
                other.kind()
            ))),
        }
    }

    /// The text inside (`text` or `json`), or an `invalid-input` error.
    pub fn into_text(self) -> Result<String, Error> {
        match self {
            Value::Text(text) | Value::Json(text) => Ok(text),
            other => Err(Error::invalid_input(format!(
                "expected a text example, got {}",
                other.kind()
            ))),
        }
    }

    /// The named fields inside, or an `invalid-input` error.
    pub fn into_fields(self) -> Result<Vec<(String, Field)>, Error> {
        match self {
            Value::Fields(fields) => Ok(fields),
            other => Err(Error::invalid_input(format!(
                "expected named fields, got {}",
                other.kind()
            ))),
        }
    }

    /// The name of this value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Tensor(_) => "tensor",
            Value::Fields(_) => "fields",
            Value::Json(_) => "json",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
        }
    }
}

impl Field {
    /// The tensor inside, or an `invalid-input` error.
    pub fn into_tensor(self) -> Result<Tensor, Error> {
        match self {
            Field::Tensor(tensor) => Ok(tensor),
            Field::Text(_) => Err(Error::invalid_input("expected a tensor field, got text")),
        }
    }
}

impl TensorSpec {
    /// A tensor of `dtype` with `shape` (`None` for a free dimension).
    pub fn new(dtype: Dtype, shape: &[Option<u64>]) -> Self {
        TensorSpec {
            dtype,
            shape: Some(shape.to_vec()),
        }
    }
}

impl FieldSpec {
    /// A tensor field.
    pub fn tensor(name: &str, dtype: Dtype, shape: &[Option<u64>]) -> Self {
        FieldSpec {
            name: name.to_string(),
            kind: FieldKind::Tensor(TensorSpec::new(dtype, shape)),
        }
    }

    /// A text field (Open Inference Protocol `BYTES`).
    pub fn text(name: &str) -> Self {
        FieldSpec {
            name: name.to_string(),
            kind: FieldKind::Text,
        }
    }
}

impl TensorInfo {
    /// One example's part of this model input or output: the model's shape without
    /// its leading (batch) axis. `None` for a scalar, which has no batch axis.
    pub fn example_spec(&self) -> Option<TensorSpec> {
        let (_, rest) = self.shape.split_first()?;
        Some(TensorSpec {
            dtype: self.dtype,
            shape: Some(rest.to_vec()),
        })
    }
}

impl Tensor {
    /// Stacks a batch of examples of named tensor fields into one tensor per name,
    /// in the first example's field order (the inputs of a multi-input model).
    pub fn stack_fields(batch: Vec<Value>) -> Result<Vec<(String, Tensor)>, Error> {
        let mut rows = batch
            .into_iter()
            .map(Value::into_fields)
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<String> = match rows.first() {
            Some(first) => first.iter().map(|(name, _)| name.clone()).collect(),
            None => return Ok(Vec::new()),
        };
        names
            .into_iter()
            .map(|name| {
                let column = rows
                    .iter_mut()
                    .map(|fields| {
                        let index =
                            fields.iter().position(|(n, _)| *n == name).ok_or_else(|| {
                                Error::invalid_input(format!("field `{name}` is missing"))
                            })?;
                        fields.swap_remove(index).1.into_tensor()
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let borrowed: Vec<&Tensor> = column.iter().collect();
                Ok((name, Tensor::stack(&borrowed)?))
            })
            .collect()
    }

    /// Stacks a batch of tensor examples into one tensor (in the host).
    pub fn stack_values(batch: Vec<Value>) -> Result<Tensor, Error> {
        let tensors = batch
            .into_iter()
            .map(Value::into_tensor)
            .collect::<Result<Vec<_>, _>>()?;
        let borrowed: Vec<&Tensor> = tensors.iter().collect();
        Tensor::stack(&borrowed)
    }
}

impl Model {
    /// Runs a model with a single input (named after the model's first input).
    pub fn run_one(&self, input: &Tensor) -> Result<Vec<(String, Tensor)>, Error> {
        let name = self
            .inputs()
            .into_iter()
            .next()
            .ok_or_else(|| Error::model("the model has no inputs"))?
            .name;
        self.run(&[(name, input)])
    }
}

/// Takes the output called `name` out of a model's outputs.
pub fn take_output(outputs: &mut Vec<(String, Tensor)>, name: &str) -> Result<Tensor, Error> {
    let index = outputs
        .iter()
        .position(|(output, _)| output == name)
        .ok_or_else(|| Error::model(format!("the model has no output `{name}`")))?;
    Ok(outputs.swap_remove(index).1)
}

/// Records through the host's metrics, under the plugin's namespace.
pub mod metrics {
    pub use crate::bindings::runinfer::handler::metrics::{counter_add, gauge_set, observe};
}

/// Logs through the host.
pub fn log(level: Level, message: &str) {
    bindings::runinfer::handler::log::log(level, message)
}

#[doc(hidden)]
pub mod __export {
    use super::*;
    use std::cell::RefCell;
    use std::thread::LocalKey;

    pub use bindings::exports::runinfer::handler::handler_api::Guest;

    /// Where an exported handler keeps its one value.
    pub type Slot<H> = LocalKey<RefCell<Option<H>>>;

    fn with<H: ModelHandler, T>(
        slot: &'static Slot<H>,
        f: impl FnOnce(&mut H) -> Result<T, Error>,
    ) -> Result<T, Error> {
        slot.with(|cell| match cell.borrow_mut().as_mut() {
            Some(handler) => f(handler),
            None => Err(Error::internal("the handler was called before init")),
        })
    }

    pub fn init<H: ModelHandler>(
        slot: &'static Slot<H>,
        args: Vec<(String, String)>,
    ) -> Result<HandlerInfo, Error> {
        let mut handler = H::default();
        handler.configure(&args)?;
        let info = HandlerInfo {
            metrics_namespace: handler.metrics_namespace(),
            batching: handler.batch_elements_kwargs(),
            resource_hints: handler.resource_hints(),
        };
        slot.with(|cell| *cell.borrow_mut() = Some(handler));
        Ok(info)
    }

    pub fn load_model<H: ModelHandler>(slot: &'static Slot<H>) -> Result<(), Error> {
        with(slot, |handler| handler.load_model())
    }

    pub fn get_signature<H: ModelHandler>(slot: &'static Slot<H>) -> Result<Signature, Error> {
        with(slot, |handler| Ok(handler.signature()))
    }

    pub fn update_model_path<H: ModelHandler>(
        slot: &'static Slot<H>,
        model: String,
        path: Option<String>,
    ) -> Result<(), Error> {
        with(slot, |handler| {
            handler.update_model_path(&model, path.as_deref())
        })
    }

    pub fn run_inference<H: ModelHandler>(
        slot: &'static Slot<H>,
        batch: Vec<Value>,
        args: Vec<(String, String)>,
    ) -> Result<Vec<Value>, Error> {
        with(slot, |handler| handler.run_inference(batch, &args))
    }
}

/// Exports a [`ModelHandler`] implementation as the component's handler.
///
/// Use it once, at the top level of a `cdylib` crate built for `wasm32-wasip2`.
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        const _: () = {
            ::std::thread_local! {
                static __RUNINFER_HANDLER: ::std::cell::RefCell<::std::option::Option<$handler>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            struct __RuninferExport;

            impl $crate::__export::Guest for __RuninferExport {
                fn init(
                    args: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<$crate::HandlerInfo, $crate::Error> {
                    $crate::__export::init(&__RUNINFER_HANDLER, args)
                }

                fn load_model() -> ::std::result::Result<(), $crate::Error> {
                    $crate::__export::load_model(&__RUNINFER_HANDLER)
                }

                fn get_signature() -> ::std::result::Result<$crate::Signature, $crate::Error> {
                    $crate::__export::get_signature(&__RUNINFER_HANDLER)
                }

                fn update_model_path(
                    model: ::std::string::String,
                    path: ::std::option::Option<::std::string::String>,
                ) -> ::std::result::Result<(), $crate::Error> {
                    $crate::__export::update_model_path(&__RUNINFER_HANDLER, model, path)
                }

                fn run_inference(
                    batch: ::std::vec::Vec<$crate::Value>,
                    args: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<::std::vec::Vec<$crate::Value>, $crate::Error> {
                    $crate::__export::run_inference(&__RUNINFER_HANDLER, batch, args)
                }
            }

    $crate::bindings::export!(__RuninferExport with_types_in $crate::bindings);
        };
    };
}
