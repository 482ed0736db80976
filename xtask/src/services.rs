//! The services the test suite needs, started once and described to the tests by environment.

use crate::prelude::*;

pub(crate) fn services() -> Result {
    let venv = venv()?;
    let chroma = private_chroma(venv.as_deref())?;
    let pgvector = private_pgvector(venv.as_deref())?;
    let milvus = private_milvus(venv.as_deref())?;
    if let Some(m) = &milvus {
        println!("export RESK_TEST_MILVUS_URL={}", m.url);
    }
    if let Some(c) = &chroma {
        println!("export RESK_TEST_CHROMA_URL={}", c.url);
    }
    if let Some(p) = &pgvector {
        println!("export RESK_TEST_PGVECTOR_URL={}", p.url);
    }
    println!("# running; press Enter to stop");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop((chroma, pgvector, milvus));
    Ok(())
}

/// Every service the suites talk to, private and on loopback, running while this value lives.
pub(crate) struct Services {
    pub(crate) redis: Option<(Proc, String)>,
    pub(crate) cluster: Option<Fixture>,
    pub(crate) sentinel: Option<Fixture>,
    pub(crate) model: Option<PathBuf>,
    pub(crate) venv: Option<PathBuf>,
    /// The venv holding the official OpenAI Python SDK (the gateway's client test).
    pub(crate) sdk: Option<PathBuf>,
    pub(crate) chroma: Option<Fixture>,
    pub(crate) pgvector: Option<Fixture>,
    pub(crate) milvus: Option<Fixture>,
}

impl Services {
    /// Start (or install, then start) what this machine can run; what it cannot is left `None`
    /// and the tests needing it skip visibly (or fail under `CI=true`).
    pub(crate) fn start() -> Result<Self> {
        let redis = private_redis()?;
        let cluster = private_redis_cluster()?;
        let sentinel = private_redis_sentinel()?;
        let model = test_model()?;
        let venv = venv()?;
        let sdk = sdk_venv()?;
        let chroma = private_chroma(venv.as_deref())?;
        let pgvector = private_pgvector(venv.as_deref())?;
        let milvus = private_milvus(venv.as_deref())?;
        browser();
        Ok(Self {
            redis,
            cluster,
            sentinel,
            model,
            venv,
            sdk,
            chroma,
            pgvector,
            milvus,
        })
    }

    /// Point `cmd` at the services: the `RESK_TEST_*` variables the tests read.
    pub(crate) fn configure(&self, cmd: &mut Command) {
        let mut set = |var: &str, value: Option<&std::ffi::OsStr>| {
            if let Some(value) = value {
                cmd.env(var, value);
            }
        };
        set(
            "RESK_TEST_REDIS_URL",
            self.redis.as_ref().map(|(_, u)| u.as_ref()),
        );
        for (var, fixture) in [
            ("RESK_TEST_REDIS_CLUSTER_URL", &self.cluster),
            ("RESK_TEST_REDIS_SENTINEL_URL", &self.sentinel),
            ("RESK_TEST_CHROMA_URL", &self.chroma),
            ("RESK_TEST_PGVECTOR_URL", &self.pgvector),
            ("RESK_TEST_MILVUS_URL", &self.milvus),
        ] {
            set(var, fixture.as_ref().map(|f| f.url.as_ref()));
        }
        set(
            "RESK_TEST_MODEL_DIR",
            self.model.as_deref().map(Path::as_os_str),
        );
        // The chaos test starts (and kills) a Chroma of its own from the venv.
        set("RESK_TEST_VENV", self.venv.as_deref().map(Path::as_os_str));
        let sdk_python = self.sdk.as_ref().map(|v| v.join("bin/python"));
        set(
            "RESK_TEST_SDK_PYTHON",
            sdk_python.as_deref().map(Path::as_os_str),
        );
    }
}
