//! The mutation plan: given what a workload holds and what should be injected, the edits that
//! bring its pod template to the desired state. Pure: no I/O, shared by the webhook and `inject`.
//!
//! What the injector owns is recorded in the pod template annotation `migrations.io/injected`.
//! Only owned items are ever replaced or removed, which makes UPDATE, reinvocation and removal
//! of the opt-in exact: nothing the user wrote is touched.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::annotations::{Key, Layered, MigrationAnnotations};
use crate::config::InjectorConfig;
use crate::denial::Denial;
use crate::injection::{self, Injection, Position};
use crate::validate;
use crate::workload::{Item, PodSpecLists, WorkloadKind, WorkloadView};

/// One change to the pod template. Indices refer to the list as earlier edits left it.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// `initContainers` is absent: create it holding this container.
    CreateInitContainers(Value),
    /// Insert at `index`, or append when `None`.
    InsertInitContainer {
        index: Option<usize>,
        container: Value,
    },
    ReplaceInitContainer {
        index: usize,
        container: Value,
    },
    RemoveInitContainer {
        index: usize,
    },
    /// The last element is going: remove the whole field, as if it had never been set.
    RemoveInitContainers,
    CreateVolumes(Value),
    AppendVolume(Value),
    ReplaceVolume {
        index: usize,
        volume: Value,
    },
    RemoveVolume {
        index: usize,
    },
    RemoveVolumes,
    /// Template `metadata` is absent: create it with only the record annotation.
    CreateMetadataWithRecord(String),
    /// `metadata.annotations` is absent: create it with only the record annotation.
    CreateAnnotationsWithRecord(String),
    SetRecord(String),
    RemoveRecord,
    /// The record is the only annotation left: remove the map.
    RemoveAnnotations,
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
}

impl Record {
    fn is_empty(&self) -> bool {
        self.init_container.is_none() && self.volume.is_none()
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
    // The common case, an object that never opted in: nothing to do, nothing allocated. Copies
    // of a pod template made by a workload controller are left exactly as their parent's.
    if (layered.get(Key::Image).is_none() && recorded.is_none()) || view.controlled {
        return Ok(Plan::default());
    }

    let mut desired = injection::resolve(config, layered)?;
    let mut plan = Plan::default();
    let record = match recorded {
        None => Record::default(),
        Some(raw) => serde_json::from_str::<Record>(raw).unwrap_or_else(|_| {
            plan.warnings.push(format!(
                "{}={raw:?} is not a record migration-injector wrote; ignoring it (nothing will be treated as injected)",
                Key::Injected
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
    if let Some(d) = &mut desired {
        plan.warnings.append(&mut d.warnings);
    }

    let mut owned = Record::default();
    plan_init_container(
        spec,
        desired.as_mut(),
        &record,
        field,
        &mut owned,
        &mut plan,
    )?;
    plan_volume(
        spec,
        desired.as_mut(),
        &record,
        field,
        &mut owned,
        &mut plan,
    )?;
    plan_record(
        template,
        template_annotations,
        &record,
        recorded,
        &owned,
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

fn plan_init_container(
    spec: &PodSpecLists<'_>,
    desired: Option<&mut Injection>,
    record: &Record,
    field: &str,
    owned: &mut Record,
    plan: &mut Plan,
) -> Result<(), Denial> {
    let items = spec.init_containers.as_deref().unwrap_or_default();
    let mut names: Vec<&str> = items.iter().map(|i| &*i.name).collect();
    let start = plan.edits.len();

    // An init container injected under a name no longer wanted is removed.
    if let Some(old) = record.init_container.as_deref() {
        if desired.as_ref().is_none_or(|d| d.container_name != old) {
            if let Some(i) = position_of(&names, old) {
                plan.edits.push(Edit::RemoveInitContainer { index: i });
                names.remove(i);
            }
        }
    }

    if let Some(d) = desired {
        let position = d.position;
        let insert = |names: &mut Vec<&str>, plan: &mut Plan, container: Value| {
            let edit = if spec.init_containers.is_none() {
                Edit::CreateInitContainers(Value::Array(vec![container]))
            } else {
                match position {
                    Position::First => Edit::InsertInitContainer {
                        index: Some(0),
                        container,
                    },
                    Position::Last => Edit::InsertInitContainer {
                        index: None,
                        container,
                    },
                }
            };
            plan.edits.push(edit);
            match position {
                Position::First => names.insert(0, ""),
                Position::Last => names.push(""),
            }
        };
        match position_of(&names, &d.container_name) {
            None => {
                // Container names are unique across init and app containers.
                if app_container_named(spec, &d.container_name) {
                    return Err(Denial::Clash {
                        field: format!("{field}spec.containers"),
                        what: "a container",
                        name: d.container_name.clone(),
                        rename: Key::ContainerName,
                    });
                }
                insert(&mut names, plan, std::mem::take(&mut d.container));
                owned.init_container = Some(d.container_name.clone());
            }
            Some(i) => {
                let existing = items
                    .iter()
                    .find(|it| it.name == d.container_name)
                    .map(parse)
                    .unwrap_or(Value::Null);
                let same = contains(&existing, &d.container, false);
                if record.init_container.as_deref() == Some(d.container_name.as_str()) {
                    owned.init_container = Some(d.container_name.clone());
                    let wanted = match d.position {
                        Position::First => 0,
                        Position::Last => names.len() - 1,
                    };
                    if i != wanted {
                        plan.edits.push(Edit::RemoveInitContainer { index: i });
                        names.remove(i);
                        insert(&mut names, plan, std::mem::take(&mut d.container));
                    } else if !same {
                        plan.edits.push(Edit::ReplaceInitContainer {
                            index: i,
                            container: std::mem::take(&mut d.container),
                        });
                    }
                } else if !same {
                    return Err(Denial::Clash {
                        field: format!("{field}spec.initContainers"),
                        what: "an init container",
                        name: d.container_name.clone(),
                        rename: Key::ContainerName,
                    });
                }
                // Otherwise the user wrote exactly what we would inject: theirs, left alone.
            }
        }
    }

    if names.is_empty() && plan.edits.len() > start {
        plan.edits.truncate(start);
        plan.edits.push(Edit::RemoveInitContainers);
    }
    Ok(())
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

fn plan_volume(
    spec: &PodSpecLists<'_>,
    desired: Option<&mut Injection>,
    record: &Record,
    field: &str,
    owned: &mut Record,
    plan: &mut Plan,
) -> Result<(), Denial> {
    let items = spec.volumes.as_deref().unwrap_or_default();
    let mut names: Vec<&str> = items.iter().map(|i| &*i.name).collect();
    let start = plan.edits.len();

    if let Some(old) = record.volume.as_deref() {
        if desired.as_ref().is_none_or(|d| d.volume_name != old) {
            if let Some(i) = position_of(&names, old) {
                if volume_in_use(spec, old, record.init_container.as_deref()) {
                    plan.warnings.push(format!(
                        "volume {old:?} was injected by migration-injector but another container mounts it, so it is kept; remove it from {field}spec.volumes yourself if it is unused"
                    ));
                } else {
                    plan.edits.push(Edit::RemoveVolume { index: i });
                    names.remove(i);
                }
            }
        }
    }

    if let Some(d) = desired {
        match position_of(&names, &d.volume_name) {
            None => {
                let volume = std::mem::take(&mut d.volume);
                plan.edits.push(if spec.volumes.is_none() {
                    Edit::CreateVolumes(Value::Array(vec![volume]))
                } else {
                    Edit::AppendVolume(volume)
                });
                names.push("");
                owned.volume = Some(d.volume_name.clone());
            }
            Some(i) => {
                let existing = items
                    .iter()
                    .find(|it| it.name == d.volume_name)
                    .map(parse)
                    .unwrap_or(Value::Null);
                let same = contains(&existing, &d.volume, false);
                if record.volume.as_deref() == Some(d.volume_name.as_str()) {
                    owned.volume = Some(d.volume_name.clone());
                    if !same {
                        plan.edits.push(Edit::ReplaceVolume {
                            index: i,
                            volume: std::mem::take(&mut d.volume),
                        });
                    }
                } else if !same {
                    return Err(Denial::Clash {
                        field: format!("{field}spec.volumes"),
                        what: "a volume",
                        name: d.volume_name.clone(),
                        rename: Key::VolumeName,
                    });
                }
            }
        }
    }

    if names.is_empty() && plan.edits.len() > start {
        plan.edits.truncate(start);
        plan.edits.push(Edit::RemoveVolumes);
    }
    Ok(())
}

fn plan_record(
    template: &crate::workload::TemplateView<'_>,
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
        Edit::CreateMetadataWithRecord(value)
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
