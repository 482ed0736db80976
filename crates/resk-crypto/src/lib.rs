#![doc = include_str!("../README.md")]

mod cipher;
mod layer;

pub use cipher::{AesGcmCipher, FORMAT_VERSION, KeyId, MasterKey, OVERHEAD};
pub use layer::EncryptedStore;
