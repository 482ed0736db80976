//! The embedder contract, on the lexical embedder.
resk_testkit::embedder_suite_if!(async { Some(resk_embed_lexical::LexicalEmbedder::new()) });
