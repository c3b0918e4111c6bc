// agent-run relay: Azure deployment (azd, resource-group scope).
//
// Function App on Flex Consumption (Python 3.11) + its storage account (Durable task hub,
// deployment package, Event Grid dead letters) + Log Analytics / Application Insights +
// an Event Grid custom topic the app publishes AgentRunCompleted to + a user-assigned
// managed identity holding every data-plane role the app needs. No keys or connection
// strings: storage, Event Grid publishing, telemetry and the Agents service all use Entra ID.
// See infra/README.md for the parameters, the roles and what it costs at rest.

targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('azd environment name; seeds resource names and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Region for every resource. It must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Foundry project endpoint the app calls (AZURE_AI_PROJECT_ENDPOINT), e.g. https://<resource>.services.ai.azure.com/api/projects/<project>.')
param aiProjectEndpoint string

@description('Resource id of the Foundry project (/subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.CognitiveServices/accounts/<account>/projects/<project>). The app identity gets "Azure AI User" on it. Empty: no role is assigned here (grant it yourself).')
param aiProjectResourceId string = ''

@description('Event envelope: eventgrid (EventGridSchema) or cloudevents (CloudEvents 1.0). Sets the topic input schema, the subscriptions delivery schema and the app setting EVENT_SCHEMA.')
@allowed([
  'eventgrid'
  'cloudevents'
])
param eventSchema string = 'eventgrid'

@description('CloudEvents source attribute (EVENT_SOURCE).')
param eventSource string = '/agent-runs'

@description('Agent ids or names submissions may name (ALLOWED_AGENTS, comma-separated). Empty lets any caller run any agent of the project: set it for a shared deployment.')
param allowedAgents string = ''

@description('Whether a submission may continue a thread the caller names (ALLOW_CALLER_THREADS).')
param allowCallerThreads bool = false

@description('How callers are told apart (AUTH_MODE): function-key (one key per caller) or app-service (App Service authentication must then be configured on the app).')
@allowed([
  'function-key'
  'app-service'
])
param authMode string = 'function-key'

@description('Public network access of the Event Grid topic. Enabled by default: a Flex Consumption app without VNet integration publishes over the public endpoint (Entra ID auth only, TLS 1.2).')
@allowed([
  'Enabled'
  'Disabled'
])
param topicPublicNetworkAccess string = 'Enabled'

@description('Create the Event Grid subscription to the on_agent_run_completed function. That function exists only after the code is deployed, so the first provision leaves this false; the postdeploy hook in azure.yaml sets DEPLOY_SUBSCRIPTION=true and provisions again.')
param deploySubscription bool = false

@secure()
@description('Optional extra subscriber: an https:// webhook that receives AgentRunCompleted (it must answer the Event Grid / CloudEvents validation handshake). Empty: no webhook subscription.')
param extraWebhookUrl string = ''

@minValue(1)
@maxValue(1000)
@description('Flex Consumption scale-out limit (instances). Bounds cost and the load on the Agents service.')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
@description('Flex Consumption instance memory size in MB.')
param instanceMemoryMB int = 2048

@minValue(-1)
@description('Log Analytics daily ingestion cap in GB (-1 = no cap).')
param logAnalyticsDailyCapGb int = 1

@minValue(1)
@description('Days dead-lettered events are kept in the deadletters container before the lifecycle policy deletes them.')
param deadLetterRetentionDays int = 30

// ---------------------------------------------------------------------------------------
// Names and constants
// ---------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

var identityName = 'id-api-${resourceToken}'
var storageAccountName = 'st${resourceToken}'
var logAnalyticsName = 'log-${resourceToken}'
var appInsightsName = 'appi-${resourceToken}'
var planName = 'plan-${resourceToken}'
var functionAppName = 'func-api-${resourceToken}'
var topicName = 'evgt-${resourceToken}'
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'deadletters'
var subscriberFunctionName = 'on_agent_run_completed'
var eventTypeCompleted = 'AgentRunCompleted'

var topicInputSchema = eventSchema == 'cloudevents' ? 'CloudEventSchemaV1_0' : 'EventGridSchema'

// Built-in role definition ids (the same GUID in every subscription).
var roleStorageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
var roleStorageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
var roleStorageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
var roleEventGridDataSender = 'd5a91429-5739-47e2-a06b-3470a27159e7' // EventGrid Data Sender
var roleMonitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
var roleAzureAiUser = '53ca6127-db72-4b80-b1b0-d745d6d5456d' // Azure AI User

// Least privilege for the identity-based AzureWebJobsStorage of a Durable Functions app: the
// Durable Azure Storage provider needs Storage Blob Data Contributor (leases, large messages),
// Storage Queue Data Contributor (control and work-item queues) and Storage Table Data
// Contributor (history and instances): "Connecting to host storage with an identity",
// Durable Functions row,
// https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity
// and https://learn.microsoft.com/azure/azure-functions/durable/durable-functions-configure-managed-identity
// Table Data Contributor also lets the host persist its diagnostic events (same page).
// No Storage Blob Data Owner: the same page lists it for the host alone (coordination blobs,
// key store), but what the host does there (read/write blobs, leases, metadata, create
// containers) is all within Blob Data Contributor; Owner adds blob ACL/ownership, index tags
// and immutability operations, which those uses do not call.
// The Flex Consumption deployment container (functionAppConfig.deployment, read and written
// with the same identity; https://learn.microsoft.com/azure/azure-functions/functions-infrastructure-as-code?pivots=flex-consumption-plan#deployment-sources)
// is covered by this account-scope Blob Data Contributor too: a deployment reads and writes
// block blobs in a container that already exists. No Flex page states a minimum role for it;
// Microsoft's Flex samples with a user-assigned identity (the Azure CLI script
// create-function-app-flex-plan-identities and the quickstart template
// function-app-flex-managed-identities) grant Storage Blob Data Owner, as a superset.
// Not verifiable offline: check with `azd up` (host start and package deploy).
var hostStorageRoles = [
  roleStorageBlobDataContributor
  roleStorageQueueDataContributor
  roleStorageTableDataContributor
]

// The project resource id split into its parts; a placeholder keeps the module scope
// expression valid when no project is given (the module is then skipped).
var aiProjectPlaceholderId = '/subscriptions/${subscription().subscriptionId}/resourceGroups/${resourceGroup().name}/providers/Microsoft.CognitiveServices/accounts/none/projects/none'
var aiProjectParts = split(empty(aiProjectResourceId) ? aiProjectPlaceholderId : aiProjectResourceId, '/')

// ---------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

// ---------------------------------------------------------------------------------------
// Storage: Functions host, Durable task hub, deployment package, dead letters
// ---------------------------------------------------------------------------------------

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_43:The name is 'st' + uniqueString() (13 lowercase letters/digits), 15 characters in all, valid by construction; checkov cannot evaluate uniqueString().
  // checkov:skip=CKV_AZURE_35:A Flex Consumption app without VNet integration reaches its host storage over the public endpoint; access is Entra ID only (shared keys disabled) and TLS 1.2.
  // checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: public network access is needed without a VNet; shared keys and anonymous blob access are off.
  // checkov:skip=CKV_AZURE_206:LRS on purpose: the account holds transient Durable task-hub state, a re-deployable package and dead letters; GRS would raise the price of the host's constant queue polling for no recovery benefit.
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Dead letters are kept for a while, then deleted, so they cannot pile up at rest.
resource storageLifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-dead-letters'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${deadLetterContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: deadLetterRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

resource hostStorageRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleGuid in hostStorageRoles: {
    name: guid(storage.id, appIdentity.id, roleGuid)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleGuid)
      principalId: appIdentity.properties.principalId
      principalType: 'ServicePrincipal'
    }
  }
]

// ---------------------------------------------------------------------------------------
// Monitoring
// ---------------------------------------------------------------------------------------

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
    workspaceCapping: {
      dailyQuotaGb: logAnalyticsDailyCapGb
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    // Telemetry only with Entra ID: the app sends APPLICATIONINSIGHTS_AUTHENTICATION_STRING.
    DisableLocalAuth: true
    IngestionMode: 'LogAnalytics'
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

// Needed to send telemetry once local (key) auth is disabled on Application Insights.
resource telemetryRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appIdentity.id, roleMonitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleMonitoringMetricsPublisher)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------------------------------
// Event Grid custom topic
// ---------------------------------------------------------------------------------------

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  // checkov:skip=CKV_AZURE_193:Public access is a parameter (topicPublicNetworkAccess), Enabled by default because a Flex Consumption app without VNet integration publishes over the public endpoint; keys are disabled, so only Entra ID principals with EventGrid Data Sender can publish.
  name: topicName
  location: location
  tags: tags
  // The system-assigned identity writes dead letters (deadLetterWithResourceIdentity).
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: topicInputSchema
    disableLocalAuth: true
    minimumTlsVersionAllowed: '1.2'
    publicNetworkAccess: topicPublicNetworkAccess
    dataResidencyBoundary: 'WithinGeopair'
  }
}

resource publisherRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, appIdentity.id, roleEventGridDataSender)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleEventGridDataSender)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The topic may write only into the deadletters container.
resource deadLetterRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, topic.id, roleStorageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageBlobDataContributor)
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------------------------------
// Function App (Flex Consumption)
// ---------------------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Zone redundancy for Flex Consumption is region-limited and needs ZRS storage; the relay keeps its state in storage, so a zone outage delays runs rather than losing them.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

var appSettings = [
  // Host storage (Durable task hub) through the user-assigned identity; no connection string.
  {
    name: 'AzureWebJobsStorage__accountName'
    value: storage.name
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: appIdentity.properties.clientId
  }
  // Telemetry with Entra ID (local auth is disabled on the component).
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${appIdentity.properties.clientId};Authorization=AAD'
  }
  // What the app reads (shared/settings.py). No EVENTGRID_TOPIC_KEY: it publishes with Entra ID.
  {
    name: 'AZURE_AI_PROJECT_ENDPOINT'
    value: aiProjectEndpoint
  }
  {
    name: 'EVENTGRID_TOPIC_ENDPOINT'
    value: topic.properties.endpoint
  }
  {
    name: 'EVENT_SCHEMA'
    value: eventSchema
  }
  {
    name: 'EVENT_SOURCE'
    value: eventSource
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: appIdentity.properties.clientId
  }
  // Caller isolation (README, "Callers and authentication").
  {
    name: 'ALLOWED_AGENTS'
    value: allowedAgents
  }
  {
    name: 'ALLOW_CALLER_THREADS'
    value: string(allowCallerThreads)
  }
  {
    name: 'AUTH_MODE'
    value: authMode
  }
]

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17:Callers authenticate with function keys and Event Grid delivers through the Functions extension endpoint; neither presents a client certificate, and an optional-certificate mode would only add a TLS renegotiation without checking anything.
  // checkov:skip=CKV_AZURE_213:No health check: Flex Consumption scales to zero and a platform health probe would keep an instance warm and billable; the Functions host reports its own health.
  // checkov:skip=CKV_AZURE_212:numberOfWorkers does not apply to Flex Consumption, which scales per function up to maximumInstanceCount.
  // checkov:skip=CKV_AZURE_222:The HTTP API (function keys) and Event Grid deliveries reach the app over its public endpoint; private access needs VNet integration, which this template does not set up.
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${appIdentity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: appSettings
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: appIdentity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
  // The host must reach storage (and the package container) and send telemetry when it first starts.
  dependsOn: [
    hostStorageRoleAssignments
    deploymentContainer
    telemetryRoleAssignment
  ]
}

// No basic-auth (publishing profile) deployments: azd deploys with Entra ID.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// ---------------------------------------------------------------------------------------
// Azure AI Foundry project role (cross resource group / subscription)
// ---------------------------------------------------------------------------------------

module aiProjectRole 'modules/ai-project-role.bicep' = if (!empty(aiProjectResourceId)) {
  name: 'ai-project-role-${resourceToken}'
  scope: resourceGroup(aiProjectParts[2], aiProjectParts[4])
  params: {
    accountName: aiProjectParts[8]
    projectName: aiProjectParts[10]
    principalId: appIdentity.properties.principalId
    roleDefinitionGuid: roleAzureAiUser
  }
}

// ---------------------------------------------------------------------------------------
// Event subscriptions (AgentRunCompleted)
// ---------------------------------------------------------------------------------------

var deliveryRetryPolicy = {
  maxDeliveryAttempts: 30
  eventTimeToLiveInMinutes: 1440
}

var deadLetterWithIdentity = {
  identity: {
    type: 'SystemAssigned'
  }
  deadLetterDestination: {
    endpointType: 'StorageBlob'
    properties: {
      resourceId: storage.id
      blobContainerName: deadLetterContainerName
    }
  }
}

var completedFilter = {
  includedEventTypes: [
    eventTypeCompleted
  ]
}

// Sample subscriber in the same app. Event Grid checks that the function exists when the
// subscription is created, hence deploySubscription (see the postdeploy hook in azure.yaml).
resource functionSubscription 'Microsoft.EventGrid/topics/eventSubscriptions@2025-02-15' = if (deploySubscription) {
  parent: topic
  name: 'agent-run-completed-to-function'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionApp.id}/functions/${subscriberFunctionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: completedFilter
    eventDeliverySchema: topicInputSchema
    retryPolicy: deliveryRetryPolicy
    deadLetterWithResourceIdentity: deadLetterWithIdentity
  }
  dependsOn: [
    deadLetterRoleAssignment
  ]
}

resource webhookSubscription 'Microsoft.EventGrid/topics/eventSubscriptions@2025-02-15' = if (!empty(extraWebhookUrl)) {
  parent: topic
  name: 'agent-run-completed-to-webhook'
  properties: {
    destination: {
      // Event Grid accepts only https:// webhook endpoints.
      endpointType: 'WebHook'
      properties: {
        endpointUrl: extraWebhookUrl
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: completedFilter
    eventDeliverySchema: topicInputSchema
    retryPolicy: deliveryRetryPolicy
    deadLetterWithResourceIdentity: deadLetterWithIdentity
  }
  dependsOn: [
    deadLetterRoleAssignment
  ]
}

// ---------------------------------------------------------------------------------------
// Outputs (azd stores them in .azure/<env>/.env)
// ---------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = resourceGroup().name
output AZURE_FUNCTION_APP_NAME string = functionApp.name
output AZURE_FUNCTION_APP_HOSTNAME string = functionApp.properties.defaultHostName
output SERVICE_API_NAME string = functionApp.name
output SERVICE_API_URI string = 'https://${functionApp.properties.defaultHostName}'
// Named so it does not become AZURE_CLIENT_ID in the developer's azd environment.
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = appIdentity.properties.clientId
output AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID string = appIdentity.properties.principalId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.name
output EVENTGRID_TOPIC_NAME string = topic.name
output EVENTGRID_TOPIC_ENDPOINT string = topic.properties.endpoint
output EVENT_SCHEMA string = eventSchema
output APPLICATIONINSIGHTS_NAME string = appInsights.name
