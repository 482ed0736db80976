#![doc = include_str!("../README.md")]

pub mod bus;
pub mod cache;
pub mod cipher;
pub mod embed;
pub mod entry;
pub mod error;
pub mod key;
pub mod tenant;
pub mod vector;
pub mod verify;

pub use bus::{Bus, BusDyn, BusEvent, BusMessage, BusReceiver, LocalBus, SharedBus};
pub use cache::{
    BackendInfo, CacheKey, CacheStore, CacheStoreDyn, CachedValue, Capabilities, PurgeScope,
    ScanCursor, ScanPage, SetOptions, SharedCacheStore,
};
pub use cipher::{Cipher, SharedCipher};
pub use embed::{Embedder, EmbedderDyn, EmbedderInfo, Embedding, SharedEmbedder};
pub use entry::{CacheEntry, CacheEntryView, Feedback, Origin, SCHEMA_VERSION, TtlPolicy};
pub use error::{Error, ErrorKind, Result};
pub use key::{KeyBuilder, KeyInput, context_digest, normalize_query};
pub use tenant::TenantId;
pub use vector::{
    CollectionSpec, Filter, Metric, OperatorFilter, RecordId, Scored, SharedVectorStore,
    VectorPurge, VectorQuery, VectorRecord, VectorStore, VectorStoreDyn, collection_missing,
    record_uuid,
};
pub use verify::{
    Judgement, Pair, Prepared, SharedVerifier, Turn, Verdict, Verifier, VerifierDyn, VerifierInfo,
};

use std::{future::Future, pin::Pin};

/// A boxed, `Send` future: what the object-safe `…Dyn` twins return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
