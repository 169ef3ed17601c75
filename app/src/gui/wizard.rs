//! The conversion wizard: source -> what was found -> profile with size estimates -> output
//! path -> convert with progress and Cancel -> offer to load the result.

use super::auto_plot::{self, AutoResult};
use super::convert_job::{ConvertJob, InspectJob, JobEvent, PROFILES, SourceFacts};
use super::dialogs::{DialogKind, DialogResult, PendingDialog};
use super::text::{human_bytes, human_count};
use super::theme;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

enum Phase {
    Choosing,
    Converting {
        job: ConvertJob,
        fraction: f32,
        line: String,
    },
    Finished(Result<PathBuf, String>),
}

enum DialogFor {
    Source,
    Output,
}

pub struct Wizard {
    pub open: bool,
    focus_source: bool,
    source_text: String,
    inspect_job: Option<InspectJob>,
    facts: Option<Result<SourceFacts, String>>,
    profile: &'static str,
    output_text: String,
    phase: Phase,
    dialog: Option<(DialogFor, PendingDialog)>,
    /// (output text, profile, problem) of the last check, so the disk is not asked every frame.
    checked: Option<(String, &'static str, Option<String>)>,
    /// Profile `auto`: the KL target, and what the finished conversion measured.
    target_kl: f64,
    auto_result: Option<AutoResult>,
    /// A file dialog could not open: say so next to the path fields.
    no_dialog: bool,
    /// What the form found this frame, for the footer below it.
    ready: Option<Ready>,
}

impl Default for Wizard {
    fn default() -> Self {
        Self {
            open: false,
            focus_source: false,
            source_text: String::new(),
            inspect_job: None,
            facts: None,
            profile: PROFILES[0].0,
            output_text: String::new(),
            phase: Phase::Choosing,
            dialog: None,
            checked: None,
            target_kl: 0.01,
            auto_result: None,
            no_dialog: false,
            ready: None,
        }
    }
}

/// The checked form, handed from the scrolling part to the footer.
struct Ready {
    facts: SourceFacts,
    output: PathBuf,
    problem: Option<String>,
}

/// What the wizard asks the app to do.
pub enum WizardAction {
    LoadModel(PathBuf),
}

impl Wizard {
    /// Opens the wizard with the keyboard in the source field.
    pub fn open(&mut self) {
        if !self.open {
            self.open = true;
            self.focus_source = true;
        }
    }

    pub fn is_converting(&self) -> bool {
        matches!(self.phase, Phase::Converting { .. })
    }

    pub fn show(&mut self, ctx: &egui::Context) -> Option<WizardAction> {
        if !self.open {
            return None;
        }
        self.poll(ctx);
        let mut action = None;
        let mut open = self.open;
        egui::Window::new("Convert a model")
            .id(egui::Id::unique("convert_wizard"))
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .frame(egui::Frame::window(&ctx.global_style()).inner_margin(egui::Margin::same(16)))
            .default_width(520.0)
            .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
            .show(ctx, |ui| {
                // 520 points where there is room; narrower windows get a narrower wizard.
                let width = (ctx.content_rect().width() - 72.0).clamp(300.0, 520.0);
                ui.set_width(width);
                // Taller than a small screen once every profile is listed: the form scrolls,
                // and Convert, the progress and Cancel stay below it, always in view.
                let footer = if self.facts.as_ref().is_some_and(|f| f.is_ok()) {
                    110.0
                } else {
                    0.0
                };
                let max = (ctx.content_rect().height() - 110.0 - footer).max(160.0);
                egui::ScrollArea::vertical()
                    .max_height(max)
                    .auto_shrink([false, true])
                    .show(ui, |ui| {
                        // Room for the scroll bar, so the size column is never under it.
                        ui.set_width(ui.available_width() - 14.0);
                        action = self.contents(ui);
                    });
                if let Some(ready) = self.ready.take()
                    && action.is_none()
                {
                    action = self.footer(ui, ready);
                }
            });
        // Closing the window cancels a running conversion (it cleans up after itself).
        if !open && let Phase::Converting { job, .. } = &self.phase {
            job.cancel.store(true, Ordering::Relaxed);
        }
        // `contents` closes the wizard itself after "Load this model": both must agree to stay open.
        self.open = open && self.open;
        action
    }

    fn poll(&mut self, ctx: &egui::Context) {
        if let Some(job) = &self.inspect_job
            && let Ok(result) = job.result.try_recv()
        {
            if let Ok(f) = &result {
                self.output_text = default_output(&f.path, self.profile).display().to_string();
            }
            self.facts = Some(result);
            self.inspect_job = None;
        }
        if let Some((purpose, dialog)) = &self.dialog
            && let Some(result) = dialog.poll()
        {
            let paths = match result {
                DialogResult::Picked(paths) => paths,
                DialogResult::Unavailable => {
                    // The path fields above the buttons take a typed path.
                    self.no_dialog = true;
                    Vec::new()
                }
            };
            if let Some(p) = paths.into_iter().next() {
                match purpose {
                    DialogFor::Source => {
                        self.source_text = p.display().to_string();
                        self.start_inspect(ctx);
                    }
                    DialogFor::Output => self.output_text = p.display().to_string(),
                }
            }
            self.dialog = None;
        }
        let mut finished = None;
        if let Phase::Converting {
            job,
            fraction,
            line,
        } = &mut self.phase
        {
            while let Ok(ev) = job.events.try_recv() {
                match ev {
                    JobEvent::Progress(f, l) => {
                        *fraction = f;
                        *line = l;
                    }
                    JobEvent::Finished(r) => finished = Some(r),
                }
            }
        }
        if let Some(r) = finished {
            self.auto_result = match &r {
                Ok(path) if self.profile == "auto" => auto_plot::read_result(path),
                _ => None,
            };
            self.phase = Phase::Finished(r);
        }
    }

    fn start_inspect(&mut self, ctx: &egui::Context) {
        let path = PathBuf::from(self.source_text.trim());
        self.facts = None;
        self.inspect_job = Some(InspectJob::start(path, ctx.clone()));
    }

    fn contents(&mut self, ui: &mut egui::Ui) -> Option<WizardAction> {
        if let Phase::Finished(Ok(path)) = &self.phase
            && let Some(r) = &self.auto_result
        {
            // The auto profile's result replaces the form (the plot needs the room).
            let path = path.clone();
            ui.colored_label(
                theme::success_color(ui),
                format!("Done: {}", path.display()),
            );
            auto_plot::size_kl_plot(ui, r);
            let mut action = None;
            ui.horizontal(|ui| {
                if ui.add(theme::primary_button("Load this model")).clicked() {
                    action = Some(WizardAction::LoadModel(path.clone()));
                }
                if ui.button("Convert another").clicked() {
                    self.phase = Phase::Choosing;
                    self.auto_result = None;
                }
            });
            if action.is_some() {
                self.open = false;
                self.phase = Phase::Choosing;
                self.auto_result = None;
            }
            return action;
        }
        let converting = self.is_converting();
        ui.spacing_mut().item_spacing.y = 8.0;
        ui.label(
            "Turn a Hugging Face checkpoint folder or a .gguf file into a .cellm model that \
             this app can run.",
        );
        ui.add_space(4.0);

        // Step 1: the source.
        let _ = theme::step_heading(ui, 1, "Source");
        ui.add_enabled_ui(!converting, |ui| {
            ui.horizontal(|ui| {
                let edit = ui.add(
                    egui::TextEdit::singleline(&mut self.source_text)
                        .hint_text("/path/to/model-folder or model.gguf")
                        .desired_width((ui.available_width() - 200.0).clamp(120.0, 280.0)),
                );
                if std::mem::take(&mut self.focus_source) {
                    edit.request_focus();
                }
                if edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                    self.start_inspect(ui.ctx());
                }
                if ui.button("Folder…").clicked() && self.dialog.is_none() {
                    self.dialog = Some((
                        DialogFor::Source,
                        PendingDialog::open(DialogKind::OpenFolder, ui.ctx().clone()),
                    ));
                }
                if ui.button(".gguf…").clicked() && self.dialog.is_none() {
                    self.dialog = Some((
                        DialogFor::Source,
                        PendingDialog::open(
                            DialogKind::OpenFile("GGUF", &["gguf"]),
                            ui.ctx().clone(),
                        ),
                    ));
                }
                let can_read = !self.source_text.trim().is_empty();
                if ui
                    .add_enabled(can_read, egui::Button::new("Read"))
                    .clicked()
                {
                    self.start_inspect(ui.ctx());
                }
            });
        });

        if self.no_dialog {
            ui.weak("No file dialog is available on this system: type the paths instead.");
        }
        if self.inspect_job.is_some() {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Reading the checkpoint…");
            });
            return None;
        }
        let facts = match &self.facts {
            None => return None,
            Some(Err(e)) => {
                theme::error_box(ui, e);
                return None;
            }
            Some(Ok(f)) => f.clone(),
        };

        // Step 2: what was found.
        let _ = theme::step_heading(ui, 2, "Found");
        egui::Grid::new("wizard_facts")
            .num_columns(2)
            .spacing([16.0, 4.0])
            .show(ui, |ui| {
                ui.weak("Family");
                ui.label(family_name(&facts.family));
                ui.end_row();
                ui.weak("Towers");
                ui.label(facts.towers.join(", "));
                ui.end_row();
                ui.weak("Parameters");
                ui.label(format!(
                    "{} in {} tensors",
                    human_count(facts.parameters),
                    facts.tensors
                ));
                ui.end_row();
            });

        // Step 3: profile.
        let _ = theme::step_heading(ui, 3, "Profile");
        ui.add_enabled_ui(!converting, |ui| {
            // The description column wraps, so the sizes stay inside a narrow wizard.
            let about_w = (ui.available_width() - 250.0).max(100.0);
            egui::Grid::new("wizard_profiles")
                .num_columns(3)
                .spacing([12.0, 4.0])
                .show(ui, |ui| {
                    for (name, about) in PROFILES {
                        let bytes = facts
                            .estimates
                            .iter()
                            .find(|(n, _)| *n == name)
                            .map_or(0, |(_, b)| *b);
                        if ui.radio(self.profile == name, name).clicked() {
                            self.profile = name;
                            self.output_text =
                                default_output(&facts.path, name).display().to_string();
                        }
                        ui.scope(|ui| {
                            ui.set_max_width(about_w);
                            ui.add(egui::Label::new(egui::RichText::new(about).weak()).wrap());
                        });
                        if name == "auto" && bytes > 0 {
                            // The f16 plan: the scan only makes it smaller.
                            ui.label(format!("≤ {}", human_bytes(bytes)));
                        } else if bytes > 0 {
                            ui.label(format!("≈ {}", human_bytes(bytes)));
                        } else {
                            ui.weak("n/a");
                        }
                        ui.end_row();
                    }
                });
            if self.profile == "auto" {
                auto_plot::target_picker(ui, &mut self.target_kl);
            }
        });

        // Step 4: output.
        let heading_id = theme::step_heading(ui, 4, "Output file").id;
        ui.add_enabled_ui(!converting, |ui| {
            ui.horizontal(|ui| {
                ui.add(
                    egui::TextEdit::singleline(&mut self.output_text)
                        .desired_width((ui.available_width() - 90.0).clamp(120.0, 380.0)),
                )
                .labelled_by(heading_id);
                if ui.button("Choose…").clicked() && self.dialog.is_none() {
                    let name = default_output(&facts.path, self.profile)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "model.cellm".to_owned());
                    self.dialog = Some((
                        DialogFor::Output,
                        PendingDialog::open(DialogKind::Save(name), ui.ctx().clone()),
                    ));
                }
            });
        });
        let output = PathBuf::from(self.output_text.trim());
        let needed = facts
            .estimates
            .iter()
            .find(|(n, _)| *n == self.profile)
            .map_or(0, |(_, b)| *b);
        let problem = match &self.checked {
            Some((text, profile, p)) if *text == self.output_text && *profile == self.profile => {
                p.clone()
            }
            _ => {
                let p = output_problem(&output, needed);
                self.checked = Some((self.output_text.clone(), self.profile, p.clone()));
                p
            }
        };
        if let Some(p) = &problem
            && !converting
            && !matches!(self.phase, Phase::Finished(Ok(_)))
        {
            theme::error_box(ui, p);
        }

        self.ready = Some(Ready {
            facts,
            output,
            problem,
        });
        None
    }

    /// Step 5, below the scrolling form: Convert, or the progress and Cancel, or the result.
    fn footer(&mut self, ui: &mut egui::Ui, ready: Ready) -> Option<WizardAction> {
        let Ready {
            facts,
            output,
            problem,
        } = ready;
        ui.add_space(6.0);
        ui.separator();
        let mut action = None;
        let mut next_phase = None;
        match &self.phase {
            Phase::Choosing => {
                let ok = problem.is_none();
                if ui
                    .add_enabled(ok, theme::primary_button("Convert"))
                    .clicked()
                {
                    self.checked = None;
                    next_phase = Some(Phase::Converting {
                        job: ConvertJob::start(
                            facts.path.clone(),
                            output.clone(),
                            if self.profile == "auto" {
                                auto_plot::job_profile(self.target_kl)
                            } else {
                                self.profile.to_owned()
                            },
                            ui.ctx().clone(),
                        ),
                        fraction: 0.0,
                        line: "starting".to_owned(),
                    });
                }
            }
            Phase::Converting {
                job,
                fraction,
                line,
            } => {
                ui.add(
                    egui::ProgressBar::new(*fraction)
                        .show_percentage()
                        .desired_width(ui.available_width()),
                );
                ui.horizontal(|ui| {
                    ui.weak(line.as_str());
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        if ui.button("Cancel").clicked() {
                            job.cancel.store(true, Ordering::Relaxed);
                        }
                    });
                });
            }
            Phase::Finished(Ok(path)) => {
                ui.add(
                    egui::Label::new(
                        egui::RichText::new(format!("Done: {}", path.display()))
                            .color(theme::success_color(ui)),
                    )
                    .wrap(),
                );
                ui.horizontal(|ui| {
                    if ui.add(theme::primary_button("Load this model")).clicked() {
                        action = Some(WizardAction::LoadModel(path.clone()));
                    }
                    if ui.button("Convert another").clicked() {
                        next_phase = Some(Phase::Choosing);
                    }
                });
            }
            Phase::Finished(Err(e)) => {
                theme::error_box(ui, &format!("Conversion stopped: {e}"));
                if ui.button("Back").clicked() {
                    next_phase = Some(Phase::Choosing);
                }
            }
        }
        if let Some(p) = next_phase {
            self.phase = p;
        }
        if action.is_some() {
            self.open = false;
            self.phase = Phase::Choosing;
        }
        action
    }
}

fn family_name(family: &str) -> String {
    match family {
        "gemma3" => "Gemma 3".to_owned(),
        "gemma4" => "Gemma 4".to_owned(),
        other => other.to_owned(),
    }
}

/// `<source name>-<profile>.cellm` next to the source.
fn default_output(source: &Path, profile: &str) -> PathBuf {
    let stem = if source.is_dir() {
        source.file_name()
    } else {
        source.file_stem()
    }
    .map(|s| s.to_string_lossy().replace(':', "-"))
    .unwrap_or_else(|| "model".to_owned());
    let dir = source
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(format!("{stem}-{profile}.cellm"))
}

/// A plain-words reason the output path cannot be used, checked before any work starts.
fn output_problem(output: &Path, needed_bytes: u64) -> Option<String> {
    if output.as_os_str().is_empty() {
        return Some("Choose where to write the .cellm file.".to_owned());
    }
    if output.extension().and_then(|e| e.to_str()) != Some("cellm") {
        return Some("The output file name should end in .cellm.".to_owned());
    }
    let parent = output.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent
        && !parent.is_dir()
    {
        return Some(format!("The folder {} does not exist.", parent.display()));
    }
    if output.exists() {
        return Some(format!(
            "{} already exists; choose another name.",
            output.display()
        ));
    }
    let dir = parent.unwrap_or(Path::new("."));
    if let Some(free) = free_bytes(dir)
        && needed_bytes > 0
        && free < needed_bytes + needed_bytes / 20
    {
        return Some(format!(
            "Not enough disk space in {}: the model needs about {} but only {} is free.",
            dir.display(),
            human_bytes(needed_bytes),
            human_bytes(free)
        ));
    }
    None
}

/// Free bytes on the file system holding `dir` (None where unknown).
#[cfg(unix)]
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}
