//! The mutation plan: given what a workload holds and what should be injected, the edits that
//! bring its pod template to the desired state. Pure: no I/O, shared by the webhook and `inject`.
//!
//! What the injector owns is recorded in the pod template annotation `migrations.io/injected`.
//! Only owned items are ever replaced or removed, which makes UPDATE, reinvocation and removal
//! of the opt-in exact: nothing the user wrote is touched.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::annotations::{unknown_key_warnings, Key, Layered, MigrationAnnotations};
use super::config::InjectorConfig;
use super::config::Position;
use super::config::RunMode;
use super::denial::{Denial, Quoted};
use super::once;
use super::resolve;
use super::validate;
use super::values::parse_run_mode;
use super::workload::{Item, PodSpecLists, WorkloadKind, WorkloadView};

/// A list of the pod spec that the injector adds one item to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    InitContainers,
    Volumes,
}

impl List {
    /// The field name in the pod spec.
    pub const fn field(self) -> &'static str {
        match self {
            List::InitContainers => "initContainers",
            List::Volumes => "volumes",
        }
    }

    const fn what(self) -> &'static str {
        match self {
            List::InitContainers => "an init container",
            List::Volumes => "a volume",
        }
    }

    /// The annotation that renames the injected item, the fix for a name clash.
    const fn rename_key(self) -> Key {
        match self {
            List::InitContainers => Key::ContainerName,
            List::Volumes => Key::VolumeName,
        }
    }
}

/// One change to the pod template. Indices refer to the list as earlier edits left it.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// The list is absent: create it holding this item.
    CreateList {
        list: List,
        item: Value,
    },
    /// Insert at `index`, or append when `None`.
    Insert {
        list: List,
        index: Option<usize>,
        item: Value,
    },
    Replace {
        list: List,
        index: usize,
        item: Value,
    },
    Remove {
        list: List,
        index: usize,
    },
    /// The last element is going: remove the whole field, as if it had never been set.
    RemoveList {
        list: List,
    },
    /// Template `metadata` is absent: create it with only the record annotation (and, in
    /// run-once mode, the fingerprint label), in one edit.
    CreateMetadataWithRecord(String, Option<String>),
    /// `metadata.annotations` is absent: create it with only the record annotation.
    CreateAnnotationsWithRecord(String),
    SetRecord(String),
    RemoveRecord,
    /// The record is the only annotation left: remove the map.
    RemoveAnnotations,
    /// Run-once mode's fingerprint label: `metadata.labels` is absent, create it with only it.
    CreateLabelsWithFingerprint(String),
    SetFingerprint(String),
    RemoveFingerprint,
    /// The fingerprint is the only label left: remove the map.
    RemoveLabels,
}

/// The outcome of planning: edits (empty means "allow unchanged") and warnings for the user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub edits: Vec<Edit>,
    pub warnings: Vec<String>,
}

/// What the injector added to a pod template, as recorded in `migrations.io/injected`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(
        rename = "initContainer",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub init_container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Run-once mode: the `migrations.io/fingerprint` label the injector set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl Record {
    fn is_empty(&self) -> bool {
        self.init_container.is_none() && self.volume.is_none() && self.fingerprint.is_none()
    }

    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

static NO_ANNOTATIONS: MigrationAnnotations<'static> = MigrationAnnotations::EMPTY;

/// Plans the mutation of one workload. `update` marks an UPDATE request, for kinds whose pod
/// template cannot change after creation.
pub fn plan(
    kind: WorkloadKind,
    view: &WorkloadView<'_>,
    config: &InjectorConfig,
    update: bool,
) -> Result<Plan, Denial> {
    let template = view.template.as_ref();
    let template_annotations = template
        .and_then(|t| t.annotations.as_ref())
        .unwrap_or(&NO_ANNOTATIONS);
    let layered = Layered {
        workload: &view.annotations,
        template: template_annotations,
    };
    let recorded = template_annotations.get(Key::Injected);
    // Copies of a pod template made by a workload controller are left exactly as their parent's.
    if view.controlled {
        return Ok(Plan::default());
    }
    let unknown = if view.annotations.unknown.is_empty() && template_annotations.unknown.is_empty()
    {
        Vec::new()
    } else {
        unknown_key_warnings([&view.annotations, template_annotations])
    };
    // The common case, an object that never opted in: nothing to do, nothing allocated.
    if layered.get(Key::Image).is_none() && recorded.is_none() {
        return Ok(Plan {
            edits: Vec::new(),
            warnings: unknown,
        });
    }

    let mut desired = resolve::resolve(config, layered)?;
    let mut plan = Plan {
        edits: Vec::new(),
        warnings: unknown,
    };
    let record = match recorded {
        None => Record::default(),
        Some(raw) => serde_json::from_str::<Record>(raw).unwrap_or_else(|_| {
            plan.warnings.push(format!(
                "{}={} is not a record migration-injector wrote; ignoring it (nothing will be treated as injected)",
                Key::Injected,
                Quoted(raw)
            ));
            Record::default()
        }),
    };
    let field = kind.template_field();
    let Some(template) = template else {
        return Err(Denial::Malformed {
            field: format!("{}template", field.trim_end_matches("template.")),
            problem: "is missing",
            fix: "add a pod template, or remove the migrations.io/image annotation",
        });
    };
    let Some(raw_spec) = template.spec.as_ref() else {
        return Err(Denial::Malformed {
            field: format!("{field}spec"),
            problem: "is missing",
            fix: "add a pod spec, or remove the migrations.io/image annotation",
        });
    };
    let spec = &raw_spec.lists().map_err(|list| Denial::Malformed {
        field: format!("{field}spec.{list}"),
        problem: "is not a list of named objects",
        fix: "correct the pod spec, or remove the migrations.io/image annotation",
    })?;
    let run_mode = match layered.get(Key::Run) {
        Some(v) => parse_run_mode(Key::Run, v)?,
        None => config.run_mode,
    };
    let mut fingerprint = None;
    if let Some(d) = &mut desired {
        plan.warnings.append(&mut d.warnings);
        if run_mode == RunMode::Once {
            if let Some(w) = once::mutable_tag_warning(&d.container) {
                plan.warnings.push(w);
            }
            fingerprint = Some(once::into_waiter(d, config)?);
        }
    }
    let claimed = record.clone();
    let record = trusted(record, spec, &mut plan.warnings);

    let mut owned = Record {
        fingerprint: fingerprint.clone(),
        ..Record::default()
    };
    let (container, volume) = match desired.as_mut() {
        Some(d) => (
            Some(Desired {
                name: &d.container_name,
                item: std::mem::take(&mut d.container),
                position: Some(d.position),
            }),
            d.volume_name.as_deref().map(|name| Desired {
                name,
                item: std::mem::take(&mut d.volume),
                // A volume's place in the list means nothing: appended, never moved.
                position: None,
            }),
        ),
        None => (None, None),
    };
    owned.init_container = plan_list(
        List::InitContainers,
        spec.init_containers.as_deref(),
        container,
        record.init_container.as_deref(),
        field,
        &mut plan,
        // Container names are unique across init and app containers.
        |name| app_container_named(spec, name).then_some(("containers", "a container")),
        |_| None,
    )?;
    owned.volume = plan_list(
        List::Volumes,
        spec.volumes.as_deref(),
        volume,
        record.volume.as_deref(),
        field,
        &mut plan,
        |_| None,
        |old| {
            volume_in_use(spec, old, record.init_container.as_deref()).then(|| format!(
                "volume {} was injected by migration-injector but another container mounts it, so it is kept; remove it from {field}spec.volumes yourself if it is unused",
                Quoted(old)
            ))
        },
    )?;
    plan_record(
        template,
        template_annotations,
        &claimed,
        recorded,
        &owned,
        &mut plan,
    );
    plan_fingerprint(
        template,
        record.fingerprint.as_deref(),
        fingerprint,
        &mut plan,
    );

    if update && kind.template_immutable() && !plan.edits.is_empty() {
        plan.edits.clear();
        plan.warnings.push(format!(
            "the pod template of a {kind} cannot change after creation; the migrations.io change applies when the {kind} is re-created"
        ));
    }
    Ok(plan)
}

fn position_of(names: &[&str], name: &str) -> Option<usize> {
    names.iter().position(|n| *n == name)
}

fn parse(item: &Item<'_>) -> Value {
    serde_json::from_str(item.raw.get()).unwrap_or(Value::Null)
}

/// The item the injector wants in a list.
struct Desired<'d> {
    name: &'d str,
    item: Value,
    /// Where it goes; `None`: anywhere (appended once, never moved).
    position: Option<Position>,
}

/// Plans one list: removes the item injected under a name no longer wanted, inserts or updates
/// the desired one, and returns the name the injector owns afterwards. `clash_elsewhere` names
/// another list that already uses the desired name (and what its items are); `keep` says why a no-longer-wanted item
/// must stay (a warning).
#[allow(clippy::too_many_arguments)]
fn plan_list(
    list: List,
    items: Option<&[Item<'_>]>,
    desired: Option<Desired<'_>>,
    recorded: Option<&str>,
    field: &str,
    plan: &mut Plan,
    clash_elsewhere: impl Fn(&str) -> Option<(&'static str, &'static str)>,
    keep: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, Denial> {
    let existed = items.is_some();
    let items = items.unwrap_or_default();
    let mut names: Vec<&str> = items.iter().map(|i| &*i.name).collect();
    let start = plan.edits.len();
    let mut owned = None;

    // The item injected under a name no longer wanted is removed.
    if let Some(old) = recorded {
        if desired.as_ref().is_none_or(|d| d.name != old) {
            if let Some(i) = position_of(&names, old) {
                match keep(old) {
                    Some(warning) => plan.warnings.push(warning),
                    None => {
                        plan.edits.push(Edit::Remove { list, index: i });
                        names.remove(i);
                    }
                }
            }
        }
    }

    if let Some(Desired {
        name,
        item,
        position,
    }) = desired
    {
        let insert = |names: &mut Vec<&str>, plan: &mut Plan, item: Value| {
            plan.edits.push(if !existed {
                Edit::CreateList { list, item }
            } else {
                Edit::Insert {
                    list,
                    index: (position == Some(Position::First)).then_some(0),
                    item,
                }
            });
            match position {
                Some(Position::First) => names.insert(0, ""),
                _ => names.push(""),
            }
        };
        let clash = |other: &str, what: &'static str| Denial::Clash {
            field: format!("{field}spec.{other}"),
            what,
            name: name.to_owned(),
            rename: list.rename_key(),
        };
        match position_of(&names, name) {
            None => {
                if let Some((other, what)) = clash_elsewhere(name) {
                    return Err(clash(other, what));
                }
                insert(&mut names, plan, item);
                owned = Some(name.to_owned());
            }
            Some(i) => {
                let existing = items
                    .iter()
                    .find(|it| it.name == name)
                    .map(parse)
                    .unwrap_or(Value::Null);
                let same = contains(&existing, &item, false);
                if recorded == Some(name) {
                    owned = Some(name.to_owned());
                    let wanted = match position {
                        Some(Position::First) => 0,
                        Some(Position::Last) => names.len() - 1,
                        None => i,
                    };
                    if i != wanted {
                        plan.edits.push(Edit::Remove { list, index: i });
                        names.remove(i);
                        insert(&mut names, plan, item);
                    } else if !same {
                        plan.edits.push(Edit::Replace {
                            list,
                            index: i,
                            item,
                        });
                    }
                } else if !same {
                    return Err(clash(list.field(), list.what()));
                }
                // Otherwise the user wrote exactly what we would inject: theirs, left alone.
            }
        }
    }

    if names.is_empty() && plan.edits.len() > start {
        plan.edits.truncate(start);
        plan.edits.push(Edit::RemoveList { list });
    }
    Ok(owned)
}

/// Fields the injector sets on its container, and those the API server defaults on any.
const INJECTED_CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "resources",
    "securityContext",
    "volumeMounts",
    "terminationMessagePolicy",
    "terminationMessagePath",
];

fn only_fields(value: &Value, allowed: &[&str]) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.keys().all(|k| allowed.contains(&k.as_str())))
}

/// Whether an init container has the shape of one the injector wrote: only the fields it sets,
/// and its config from exactly where the injector puts it: one read-only mount of the recorded
/// volume, or (with no volume) environment only from Secret keys. A mesh's or Vault's init
/// container fails this, so a forged record cannot make the injector remove it.
fn looks_like_injected_container(item: &Value, volume: Option<&str>) -> bool {
    if once::looks_like_waiter(item) {
        let mounts = item.get("volumeMounts").and_then(Value::as_array);
        return only_fields(item, INJECTED_CONTAINER_FIELDS)
            && volume == Some(once::POD_VOLUME)
            && mounts.is_some_and(|m| {
                m.len() == 1 && m[0].get("name").and_then(Value::as_str) == volume
            });
    }
    let mounts = item
        .get("volumeMounts")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let env = item
        .get("env")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let config_ok = match volume {
        Some(v) => {
            mounts.len() == 1
                && only_fields(&mounts[0], &["name", "mountPath", "readOnly"])
                && mounts[0].get("readOnly") == Some(&Value::Bool(true))
                && mounts[0].get("name").and_then(Value::as_str) == Some(v)
        }
        None => mounts.is_empty() && !env.is_empty(),
    };
    let env_ok = env.iter().all(|e| {
        only_fields(e, &["name", "valueFrom"])
            && e.get("valueFrom")
                .is_some_and(|f| only_fields(f, &["secretKeyRef"]))
    });
    only_fields(item, INJECTED_CONTAINER_FIELDS) && config_ok && env_ok
}

/// Whether a volume has the shape of the one the injector writes: a Secret volume, nothing else.
fn looks_like_injected_volume(item: &Value) -> bool {
    once::looks_like_pod_volume(item)
        || only_fields(item, &["name", "secret"])
            && item
                .get("secret")
                .is_some_and(|s| only_fields(s, &["secretName", "defaultMode"]))
}

/// The record, minus any name whose item does not look like what the injector writes: the
/// record is written by whoever writes the object, so it is a claim to check, not a fact.
fn trusted(record: Record, spec: &PodSpecLists<'_>, warnings: &mut Vec<String>) -> Record {
    let find = |items: &Option<Vec<Item<'_>>>, name: &str| {
        items.iter().flatten().find(|i| i.name == name).map(parse)
    };
    let mut distrust = |what: &str, name: &str| {
        warnings.push(format!(
            "{} names {what} {}, which does not look like what migration-injector injects; it is left alone",
            Key::Injected,
            Quoted(name)
        ));
    };
    let volume = record.volume.filter(|name| {
        let ok = find(&spec.volumes, name).is_none_or(|v| looks_like_injected_volume(&v));
        if !ok {
            distrust("volume", name);
        }
        ok
    });
    let init_container = record.init_container.filter(|name| {
        let ok = find(&spec.init_containers, name)
            .is_none_or(|c| looks_like_injected_container(&c, volume.as_deref()));
        if !ok {
            distrust("init container", name);
        }
        ok
    });
    Record {
        init_container,
        volume,
        fingerprint: record.fingerprint,
    }
}

fn app_container_named(spec: &PodSpecLists<'_>, name: &str) -> bool {
    spec.containers
        .and_then(|raw| serde_json::from_str::<Vec<Item<'_>>>(raw.get()).ok())
        .is_some_and(|containers| containers.iter().any(|c| c.name == name))
}

/// Names of volumes mounted by containers other than the injected one.
fn volume_in_use(spec: &PodSpecLists<'_>, volume: &str, injected: Option<&str>) -> bool {
    #[derive(Deserialize)]
    struct Mounts {
        #[serde(default, rename = "volumeMounts")]
        volume_mounts: Option<Vec<NameOnly>>,
    }
    #[derive(Deserialize)]
    struct NameOnly {
        #[serde(default)]
        name: String,
    }
    let containers: Option<Vec<Item<'_>>> = spec
        .containers
        .and_then(|raw| serde_json::from_str(raw.get()).ok());
    let lists = [containers.as_deref(), spec.init_containers.as_deref()];
    let in_use = lists.into_iter().flatten().flatten().any(|c| {
        Some(&*c.name) != injected
            && serde_json::from_str::<Mounts>(c.raw.get())
                .ok()
                .and_then(|m| m.volume_mounts)
                .is_some_and(|mounts| mounts.iter().any(|m| m.name == volume))
    });
    in_use
}

/// The run-once fingerprint label: set while wanted, removed once not wanted if the injector set
/// it (the record says so).
fn plan_fingerprint(
    template: &super::workload::TemplateView<'_>,
    recorded: Option<&str>,
    wanted: Option<String>,
    plan: &mut Plan,
) {
    let labels = template.labels.as_ref();
    let current = labels.and_then(|l| l.fingerprint.as_deref());
    match wanted {
        Some(fp) if current == Some(fp.as_str()) => {}
        // No metadata at all: the record's edit created it with the label.
        Some(_) if !template.has_metadata => {}
        Some(fp) if labels.is_none() => plan.edits.push(Edit::CreateLabelsWithFingerprint(fp)),
        Some(fp) => plan.edits.push(Edit::SetFingerprint(fp)),
        None if recorded.is_some() && current.is_some() => {
            plan.edits.push(if labels.is_some_and(|l| l.total <= 1) {
                Edit::RemoveLabels
            } else {
                Edit::RemoveFingerprint
            })
        }
        None => {}
    }
}

fn plan_record(
    template: &super::workload::TemplateView<'_>,
    annotations: &MigrationAnnotations<'_>,
    record: &Record,
    recorded: Option<&str>,
    owned: &Record,
    plan: &mut Plan,
) {
    if owned.is_empty() {
        if recorded.is_some() {
            plan.edits.push(if annotations.total <= 1 {
                Edit::RemoveAnnotations
            } else {
                Edit::RemoveRecord
            });
        }
        return;
    }
    if recorded.is_some() && owned == record {
        return;
    }
    let value = owned.encode();
    plan.edits.push(if !template.has_metadata {
        Edit::CreateMetadataWithRecord(value, owned.fingerprint.clone())
    } else if template.annotations.is_none() {
        Edit::CreateAnnotationsWithRecord(value)
    } else {
        Edit::SetRecord(value)
    });
}

/// Whether `existing` holds everything `desired` sets. Fields the API server defaults
/// (terminationMessagePath, a Secret's defaultMode, ...) are extra and do not count as a change.
/// Under `resources`, quantities compare by value, since the API server canonicalises them.
pub fn contains(existing: &Value, desired: &Value, quantities: bool) -> bool {
    match (existing, desired) {
        (Value::Object(e), Value::Object(d)) => d.iter().all(|(k, dv)| {
            e.get(k)
                .is_some_and(|ev| contains(ev, dv, quantities || k == "resources"))
        }),
        (Value::Array(e), Value::Array(d)) => {
            e.len() == d.len() && e.iter().zip(d).all(|(ev, dv)| contains(ev, dv, quantities))
        }
        (Value::String(e), Value::String(d)) if quantities => {
            e == d
                || matches!((validate::quantity(e), validate::quantity(d)), (Ok(a), Ok(b)) if a == b)
        }
        _ => existing == desired,
    }
}
