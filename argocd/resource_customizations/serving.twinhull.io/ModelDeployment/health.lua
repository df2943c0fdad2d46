-- Argo CD health of a twinhull ModelDeployment (serving.twinhull.io/v1alpha1).
-- The table it follows is in the README ("GitOps: kstatus and Argo CD health"): it agrees
-- with kstatus, which reads the same conditions (Reconciling, Stalled, Ready,
-- observedGeneration), and adds what kstatus has no word for: Degraded while serving
-- through a failover, Suspended while a decision waits for an SRE's approval.
-- Runs without Lua's standard libraries (as an argocd-cm customization does): no string.*.
local hs = {}

local function condition(ctype)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function is(c, status)
  return c ~= nil and c.status == status
end

local function text(c, default)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return default
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "being deleted: twinhull removes the member objects"
  return hs
end

if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "waiting for twinhull to observe the ModelDeployment"
  return hs
end

local generation = obj.metadata.generation or 0
if obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "waiting for twinhull to observe generation " .. generation ..
    " (status describes generation " .. obj.status.observedGeneration .. ")"
  return hs
end

local ready = condition("Ready")
local stalled = condition("Stalled")
local reconciling = condition("Reconciling")

-- Failed: will not progress without a change to the object (rolled back and held back,
-- a rollout failed with nothing to roll back to, invalid spec, unknown tier, ...).
if is(stalled, "True") then
  hs.status = "Degraded"
  hs.message = text(stalled, stalled.reason or "Stalled")
  return hs
end

-- Nothing serves: no placed cluster can, whatever is on its way.
if is(ready, "False") and ready.reason == "NoServingCluster" then
  hs.status = "Degraded"
  hs.message = text(ready, "no placed cluster can serve")
  return hs
end

if is(reconciling, "True") then
  if reconciling.reason == "WaitingForApproval" then
    hs.status = "Suspended"
  else
    hs.status = "Progressing"
  end
  hs.message = text(reconciling, reconciling.reason or "Reconciling")
  return hs
end

if is(ready, "True") then
  local failedOver = condition("FailedOver")
  local degraded = condition("Degraded")
  if ready.reason == "ServingDegraded" then
    hs.status = "Degraded"
    hs.message = text(ready, "serving degraded")
  elseif is(failedOver, "True") then
    hs.status = "Degraded"
    hs.message = text(failedOver, "failed over")
  elseif is(degraded, "True") then
    hs.status = "Degraded"
    hs.message = text(degraded, "degraded")
  else
    hs.status = "Healthy"
    hs.message = text(ready, "serving")
  end
  return hs
end

hs.status = "Progressing"
hs.message = text(ready, "waiting for twinhull to report Ready")
return hs
